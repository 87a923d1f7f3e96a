//! The local summarizer used without a Gemini key: the chat's own sentences
//! that carry its most frequent terms, with who said them. Honest about
//! what it is: the result names the method.

use std::collections::HashMap;

/// One line of chat.
pub struct Line<'a> {
    pub user: &'a str,
    pub text: &'a str,
}

const STOP: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
    "one", "our", "out", "has", "have", "this", "that", "with", "from", "they", "will", "would",
    "there", "their", "what", "about", "which", "when", "make", "like", "just", "into", "than",
    "then", "them", "these", "some", "been", "were", "your", "also", "its", "it's", "i'm", "we're",
    "let", "get", "got", "yes", "yeah", "okay", "ok",
];

fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() > 2 && !STOP.contains(&w.as_str()))
}

fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?' | '\n') {
            let s = text[start..i + c.len_utf8()].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + c.len_utf8();
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Up to `k` sentences, in chat order, as `- user: sentence` lines.
pub fn summarize(lines: &[Line<'_>], k: usize) -> String {
    let mut tf: HashMap<String, f64> = HashMap::new();
    for l in lines {
        for w in words(l.text) {
            *tf.entry(w).or_default() += 1.0;
        }
    }
    let mut scored: Vec<(f64, usize, &str, &str)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        for s in sentences(l.text) {
            let ws: Vec<String> = words(s).collect();
            if ws.is_empty() {
                continue;
            }
            let score = ws
                .iter()
                .map(|w| tf.get(w).copied().unwrap_or(0.0))
                .sum::<f64>()
                / (ws.len() as f64).sqrt();
            scored.push((score, i, l.user, s));
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    scored.sort_by_key(|s| s.1);
    scored
        .iter()
        .map(|(_, _, user, s)| format!("- {user}: {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_sentences_that_carry_the_chat() {
        let lines = [
            Line {
                user: "ann",
                text: "The deploy failed again. Lunch anyone?",
            },
            Line {
                user: "bob",
                text: "Which deploy? The database migration deploy?",
            },
            Line {
                user: "ann",
                text: "Yes, the migration deploy broke the database.",
            },
            Line {
                user: "cat",
                text: "Nice weather today.",
            },
        ];
        let s = summarize(&lines, 2);
        assert!(s.contains("migration deploy"), "{s}");
        assert!(!s.contains("weather"), "{s}");
        assert!(s.lines().all(|l| l.starts_with("- ")));
        // Every line is a sentence from the chat, attributed.
        for l in s.lines() {
            let (user, sentence) = l
                .trim_start_matches("- ")
                .split_once(": ")
                .expect("user: sentence");
            assert!(
                lines
                    .iter()
                    .any(|x| x.user == user && x.text.contains(sentence)),
                "{l}"
            );
        }
    }
}
