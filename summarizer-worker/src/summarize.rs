//! What a job does with a room: its transcript, then one model call, or
//! map-reduce over chunks when the transcript is over the input budget; or
//! the extractive summary without a model.

use crate::extractive;
use crate::gemini::{Gemini, GeminiError};
use chat_core::keys::Keys;
use chat_core::protocol::{Kind, Message};
use chat_core::redis_conn::Conn;
use chat_core::scripts::{ScriptError, Scripts};

const SYSTEM: &str = "You summarize group chat conversations for people who missed them. \
Write a short, neutral summary: the topics, decisions, open questions and who said what when it matters. \
Use plain sentences, no preamble.";
const SYSTEM_PART: &str = "You summarize one part of a longer group chat conversation. \
Keep every decision, open question and who raised it; be brief.";
const SYSTEM_COMBINE: &str = "You combine partial summaries of consecutive parts of one group chat into one short, \
neutral summary of the whole conversation. No preamble.";
const MAX_OUTPUT_TOKENS: u32 = 1024;
/// Reduce rounds before a map-reduce gives up (each must shrink).
const MAX_ROUNDS: usize = 8;

/// The messages a job summarizes, oldest first: retained, in the window,
/// not earlier summaries.
pub async fn load(
    scripts: &Scripts,
    conn: &mut Conn,
    keys: &Keys,
    room: &str,
    since: Option<u64>,
    until: Option<u64>,
) -> Result<Vec<Message>, ScriptError> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let r = scripts.range(conn, keys, room, after, 1000).await?;
        // Paged by entries read: a page of entries that did not parse
        // (skipped with a warning) is not the end of the room.
        let Some(read_to) = r.read_to else {
            break;
        };
        out.extend(r.messages.into_iter().filter(|m| {
            // Messages people wrote, not events or tombstones. (Edits are
            // not folded in: the summary reads the text as first sent.)
            matches!(m.kind, Kind::User | Kind::System)
                && !m.deleted
                && since.is_none_or(|s| m.ts >= s)
                && until.is_none_or(|u| m.ts <= u)
        }));
        if read_to >= r.last || read_to <= after {
            break;
        }
        after = read_to;
    }
    Ok(out)
}

pub fn transcript_line(m: &Message) -> String {
    format!("{}: {}", m.user, m.text.replace('\n', " "))
}

/// A summary and how it was made.
pub struct Outcome {
    pub summary: String,
    /// `gemini:<model>`, `extractive` or `none`.
    pub method: String,
    pub truncated: bool,
    pub calls: usize,
}

/// Lines grouped into chunks of at most `budget` characters (a single line
/// over the budget is cut).
fn chunks(lines: &[String], budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_chars = 0;
    for l in lines {
        let l: String = l.chars().take(budget).collect();
        let n = l.chars().count();
        if !cur.is_empty() && cur_chars + 1 + n > budget {
            out.push(std::mem::take(&mut cur));
            cur_chars = 0;
        }
        if !cur.is_empty() {
            cur.push('\n');
            cur_chars += 1;
        }
        cur.push_str(&l);
        cur_chars += n;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One call when the transcript fits the budget; otherwise each chunk is
/// summarized and the partial summaries combined (again in chunks, if needed).
pub async fn with_gemini(
    g: &Gemini,
    model: &str,
    lines: &[String],
    budget: usize,
) -> Result<Outcome, GeminiError> {
    let mut calls = 0;
    let mut truncated = false;
    let mut parts = chunks(lines, budget);
    if parts.len() == 1 {
        let r = g
            .generate(
                SYSTEM,
                &format!("Chat transcript:\n{}", parts[0]),
                MAX_OUTPUT_TOKENS,
            )
            .await?;
        return Ok(Outcome {
            summary: r.text,
            method: format!("gemini:{model}"),
            truncated: r.truncated,
            calls: 1,
        });
    }
    let mut system = SYSTEM_PART;
    for _round in 0..MAX_ROUNDS {
        let mut partials = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let prompt = if system == SYSTEM_PART {
                format!(
                    "Part {} of {} of the chat transcript:\n{p}",
                    i + 1,
                    parts.len()
                )
            } else {
                format!("Partial summaries, in order:\n{p}")
            };
            let r = g.generate(system, &prompt, MAX_OUTPUT_TOKENS).await?;
            calls += 1;
            truncated |= r.truncated;
            partials.push(r.text.replace('\n', " "));
        }
        let next = chunks(&partials, budget);
        if next.len() == 1 {
            let r = g
                .generate(
                    SYSTEM_COMBINE,
                    &format!("Partial summaries, in order:\n{}", next[0]),
                    MAX_OUTPUT_TOKENS,
                )
                .await?;
            return Ok(Outcome {
                summary: r.text,
                method: format!("gemini:{model}"),
                truncated: truncated || r.truncated,
                calls: calls + 1,
            });
        }
        // Still too long: reduce the partial summaries themselves, as long as
        // each round shrinks (partials as long as the budget never would).
        if next.len() >= parts.len() {
            return Err(GeminiError::Permanent(format!(
                "partial summaries do not shrink under the input budget ({} chunks); raise CHAT_SUMMARY_INPUT_BUDGET",
                next.len()
            )));
        }
        parts = next;
        system = SYSTEM_COMBINE;
    }
    Err(GeminiError::Permanent(format!(
        "no summary after {MAX_ROUNDS} reduce rounds"
    )))
}

/// The extractive summary: the chat's own most representative sentences.
pub fn extractive(messages: &[Message]) -> Outcome {
    let lines: Vec<extractive::Line<'_>> = messages
        .iter()
        .map(|m| extractive::Line {
            user: &m.user,
            text: &m.text,
        })
        .collect();
    let body = extractive::summarize(&lines, 5);
    Outcome {
        summary: format!(
            "Extractive summary (no language model configured) of {} messages:\n{body}",
            messages.len()
        ),
        method: "extractive".into(),
        truncated: false,
        calls: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_budget() {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("user{i}: {}", "x".repeat(40)))
            .collect();
        let cs = chunks(&lines, 500);
        assert!(cs.len() > 1);
        assert!(cs.iter().all(|c| c.chars().count() <= 500));
        assert_eq!(
            cs.iter().map(|c| c.lines().count()).sum::<usize>(),
            100,
            "no line lost"
        );
        let long = vec!["y".repeat(2000)];
        assert_eq!(chunks(&long, 500)[0].chars().count(), 500);
    }
}
