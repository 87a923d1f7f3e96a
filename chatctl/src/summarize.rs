//! `chatctl summarize`: submit a batch of rooms, follow the jobs with a
//! progress bar, print a table of the results; exit non-zero if any failed.

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub struct Args {
    pub url: String,
    pub api_key: String,
    pub rooms: Vec<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub timeout: Duration,
}

/// Rooms from `--room` flags and a file of one room per line (`#` comments).
pub fn rooms(flags: Vec<String>, file: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let mut rooms = flags;
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        rooms.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if rooms.is_empty() {
        bail!("no rooms: give --room ROOM (repeatable) or --rooms-file FILE");
    }
    Ok(rooms)
}

/// Returns whether every job finished `done`.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = args.url.trim_end_matches('/');
    let resp = http
        .post(format!("{base}/v1/summaries"))
        .bearer_auth(&args.api_key)
        .json(&json!({"rooms": args.rooms, "since": args.since, "until": args.until}))
        .send()
        .await
        .context("submitting the batch")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.as_u16() != 202 {
        bail!(
            "the server refused the batch ({status}): {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    let jobs: Vec<(String, String)> = body["jobs"]
        .as_array()
        .context("no jobs in the answer")?
        .iter()
        .filter_map(|j| {
            Some((
                j["room"].as_str()?.to_owned(),
                j["job_id"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results: Vec<Option<Value>> = vec![None; jobs.len()];
    let deadline = Instant::now() + args.timeout;
    loop {
        for (i, (_, id)) in jobs.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let s: Value = match http
                .get(format!("{base}/v1/summaries/{id}"))
                .bearer_auth(&args.api_key)
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => continue,
            };
            if matches!(s["status"].as_str(), Some("done" | "failed")) {
                results[i] = Some(s);
                bar.inc(1);
            }
        }
        let failed = results
            .iter()
            .flatten()
            .filter(|s| s["status"] == "failed")
            .count();
        bar.set_message(format!("{failed} failed"));
        if results.iter().all(Option::is_some) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish_and_clear();
    println!(
        "{:<24} {:<8} {:>8}  {:<20} RESULT",
        "ROOM", "STATUS", "ATTEMPTS", "METHOD"
    );
    let mut all_done = true;
    for ((room, _), r) in jobs.iter().zip(&results) {
        let (status, attempts, method, result) = match r {
            Some(s) => {
                let result = match s["status"].as_str() {
                    Some("done") => s["summary"].as_str().unwrap_or(""),
                    _ => s["error"].as_str().unwrap_or(""),
                };
                (
                    s["status"].as_str().unwrap_or("?").to_owned(),
                    s["attempts"].as_u64().unwrap_or(0),
                    s["method"].as_str().unwrap_or("-").to_owned(),
                    result
                        .replace('\n', " ")
                        .chars()
                        .take(60)
                        .collect::<String>(),
                )
            }
            None => (
                "timeout".to_owned(),
                0,
                "-".to_owned(),
                "still pending at the deadline".to_owned(),
            ),
        };
        all_done &= status == "done";
        println!("{room:<24} {status:<8} {attempts:>8}  {method:<20} {result}");
    }
    Ok(all_done)
}
