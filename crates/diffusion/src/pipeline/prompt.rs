//! Prompt weighting (`prompt_weighting: true` on fal's endpoints), in the syntax the community's
//! tools share (AUTOMATIC1111's web UI, and the example of fal's own page:
//! `(worst quality, low quality, normal quality:2)`):
//!
//! - `(text)` multiplies the attention to `text` by 1.1, `((text))` by 1.1², `[text]` divides it
//!   by 1.1; `(text:1.3)` sets the factor to 1.3 (nested factors multiply);
//! - `\(`, `\)`, `\[`, `\]`, `\\` are the literal characters; an unmatched bracket is literal too;
//! - `BREAK` (upper case, as a word) ends the current 75-token chunk.
//!
//! The weighted prompt is tokenized fragment by fragment, then cut into chunks of 75 tokens, each
//! encoded as its own 77-token window (`bos … eos`, padded) and the hidden states concatenated
//! along the sequence: prompts are no longer limited to 77 tokens. Each token's embedding is then
//! multiplied by its weight and the chunk rescaled to keep its mean (A1111's normalisation), so
//! weights shift emphasis without changing the overall magnitude.

/// A piece of prompt text and the weight of its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    pub text: String,
    pub weight: f32,
    /// A `BREAK` before this fragment.
    pub break_before: bool,
}

const ROUND_UP: f32 = 1.1;
const SQUARE_DOWN: f32 = 1.0 / 1.1;

/// Parses weighting syntax into fragments of equal weight (adjacent equal weights merged).
pub fn parse(prompt: &str) -> Vec<Fragment> {
    // The text so far, as (char, weight-stack index) runs; brackets resolved at their close.
    struct Open {
        kind: char,
        start: usize,
    }
    let chars: Vec<char> = prompt.chars().collect();
    let mut text: Vec<(char, f32)> = Vec::new();
    let mut breaks: Vec<usize> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() && "()[]\\".contains(chars[i + 1]) => {
                text.push((chars[i + 1], 1.0));
                i += 2;
                continue;
            }
            '(' | '[' => open.push(Open {
                kind: c,
                start: text.len(),
            }),
            ')' if open.last().is_some_and(|o| o.kind == '(') => {
                let o = open.pop().map_or(0, |o| o.start);
                // `(text:1.3)`: an explicit weight after the last colon.
                let body: String = text[o..].iter().map(|(c, _)| *c).collect();
                let explicit = body
                    .rfind(':')
                    .and_then(|p| body[p + 1..].trim().parse::<f32>().ok().map(|w| (p, w)));
                match explicit {
                    Some((p, w)) => {
                        let cut = o + body[..p].chars().count();
                        text.truncate(cut);
                        for t in &mut text[o..] {
                            t.1 *= w;
                        }
                    }
                    None => {
                        for t in &mut text[o..] {
                            t.1 *= ROUND_UP;
                        }
                    }
                }
            }
            ']' if open.last().is_some_and(|o| o.kind == '[') => {
                let o = open.pop().map_or(0, |o| o.start);
                for t in &mut text[o..] {
                    t.1 *= SQUARE_DOWN;
                }
            }
            'B' if chars[i..].starts_with(&['B', 'R', 'E', 'A', 'K'])
                && (i == 0 || chars[i - 1].is_whitespace())
                && chars.get(i + 5).is_none_or(|c| c.is_whitespace()) =>
            {
                breaks.push(text.len());
                i += 5;
                continue;
            }
            _ => text.push((c, 1.0)),
        }
        i += 1;
    }
    // Brackets never closed are literal: put them back where they were, weight unchanged.
    for o in open.into_iter().rev() {
        text.insert(o.start, (o.kind, 1.0));
        for b in &mut breaks {
            if *b > o.start {
                *b += 1;
            }
        }
    }
    let mut out: Vec<Fragment> = Vec::new();
    for (k, (c, w)) in text.iter().enumerate() {
        let brk = breaks.contains(&k);
        match out.last_mut() {
            Some(last) if !brk && (last.weight - w).abs() < 1e-6 => last.text.push(*c),
            _ => out.push(Fragment {
                text: c.to_string(),
                weight: *w,
                break_before: brk,
            }),
        }
    }
    if breaks.contains(&text.len()) {
        out.push(Fragment {
            text: String::new(),
            weight: 1.0,
            break_before: true,
        });
    }
    out
}

/// Token ids and weights cut into chunks of at most `per_chunk` tokens (75 for CLIP), `BREAK`
/// starting a new one. An empty prompt is one empty chunk.
pub fn chunks(
    tokens: impl IntoIterator<Item = (Vec<u32>, f32, bool)>,
    per_chunk: usize,
) -> Vec<Vec<(u32, f32)>> {
    let mut out: Vec<Vec<(u32, f32)>> = vec![Vec::new()];
    for (ids, weight, brk) in tokens {
        if brk && !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
        }
        for id in ids {
            if out.last().is_some_and(|c| c.len() >= per_chunk) {
                out.push(Vec::new());
            }
            if let Some(c) = out.last_mut() {
                c.push((id, weight));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(p: &str) -> Vec<(String, f32)> {
        parse(p)
            .into_iter()
            .map(|f| (f.text, (f.weight * 1000.0).round() / 1000.0))
            .collect()
    }

    #[test]
    fn the_syntax_of_fals_example() {
        assert_eq!(
            weights("cartoon, (worst quality, low quality, normal quality:2)"),
            [
                ("cartoon, ".to_owned(), 1.0),
                ("worst quality, low quality, normal quality".to_owned(), 2.0)
            ]
        );
    }

    #[test]
    fn nesting_brackets_and_escapes() {
        assert_eq!(
            weights("a (red) ((fox)) in [snow]"),
            [
                ("a ".to_owned(), 1.0),
                ("red".to_owned(), 1.1),
                (" ".to_owned(), 1.0),
                ("fox".to_owned(), 1.21),
                (" in ".to_owned(), 1.0),
                ("snow".to_owned(), 0.909)
            ]
        );
        assert_eq!(
            weights("((a:1.5) b)"),
            [("a".to_owned(), 1.65), (" b".to_owned(), 1.1)]
        );
        assert_eq!(
            weights(r"\(literal\) 10:30"),
            [("(literal) 10:30".to_owned(), 1.0)]
        );
        assert_eq!(
            weights("unclosed (paren"),
            [("unclosed (paren".to_owned(), 1.0)]
        );
        assert_eq!(
            weights("stray ) close"),
            [("stray ) close".to_owned(), 1.0)]
        );
        // A colon without a number is text.
        assert_eq!(weights("(time: noon)"), [("time: noon".to_owned(), 1.1)]);
    }

    #[test]
    fn break_starts_a_chunk() {
        let f = parse("a cat BREAK a dog");
        assert_eq!(f.len(), 2);
        assert!(f[1].break_before);
        assert_eq!(f[1].text, " a dog");
        assert_eq!(parse("BREAKFAST")[0].text, "BREAKFAST");
    }

    #[test]
    fn chunks_of_75() {
        let c = chunks([(vec![1; 100], 1.0, false), (vec![2; 10], 2.0, true)], 75);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), [75, 25, 10]);
        assert_eq!(c[2][0], (2, 2.0));
        assert_eq!(chunks(Vec::new(), 75), vec![Vec::new()]);
    }
}
