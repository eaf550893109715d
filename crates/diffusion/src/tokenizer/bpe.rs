//! Byte-level BPE: the GPT-2 byte-to-unicode table, the merge table and the merge loop.
//!
//! A pre-token (one regex match of the normalised prompt) is turned into UTF-8 bytes, each byte
//! into one printable "byte character" of the GPT-2 table, and the last character gets CLIP's
//! end-of-word suffix `</w>`. Those symbols are then merged pairwise, always the pair with the
//! lowest merge rank first (leftmost on ties), until no adjacent pair is in the merge table. This
//! is the order the `tokenizers` BPE model applies merges in (a priority queue of
//! `(rank, position)`); the original CLIP Python loop (merge every occurrence of the best bigram,
//! left to right) reaches the same result.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// CLIP's end-of-word marker, appended to the last byte character of every pre-token.
pub(super) const END_OF_WORD: &str = "</w>";

/// GPT-2's reversible byte-to-unicode table: the 188 printable bytes (`!`..=`~`, `¡`..=`¬`,
/// `®`..=`ÿ`) stand for themselves; the 68 others (controls, space, NBSP, soft hyphen) are
/// mapped, in byte order, to U+0100, U+0101, … so that every byte is a visible, non-space char.
pub(super) const BYTE_CHARS: [char; 256] = byte_chars();

const fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_unprintable = 256u32;
    let mut byte = 0usize;
    while byte < 256 {
        let printable = matches!(byte, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let code = if printable {
            byte as u32
        } else {
            next_unprintable += 1;
            next_unprintable - 1
        };
        table[byte] = match char::from_u32(code) {
            Some(c) => c,
            None => panic!("the byte table only uses code points below U+0200"),
        };
        byte += 1;
    }
    table
}

/// One merge rule: `(left, right)` → `merged`, applied in order of `rank` (its line in merges.txt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Merge {
    pub rank: u32,
    pub merged: u32,
}

/// The BPE model: initial symbols for every byte, and the merge table keyed by symbol ids.
#[derive(Clone, Debug)]
pub(super) struct BytePairEncoder {
    /// Id of each byte's character when it is not the last byte of a pre-token.
    inner: [u32; 256],
    /// Id of each byte's character + `</w>`, for the last byte of a pre-token.
    last: [u32; 256],
    merges: HashMap<(u32, u32), Merge>,
}

/// A symbol of the word being merged, in a doubly linked list over the initial bytes.
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: Option<usize>,
    next: Option<usize>,
    alive: bool,
}

impl BytePairEncoder {
    /// `inner` / `last` hold the id of every byte character without / with `</w>`; a byte whose
    /// character is missing from the vocabulary has already been given the unk id by the caller.
    pub fn new(inner: [u32; 256], last: [u32; 256], merges: HashMap<(u32, u32), Merge>) -> Self {
        Self {
            inner,
            last,
            merges,
        }
    }

    /// Appends the ids of one pre-token (non-empty, already normalised) to `out`.
    pub fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let bytes = word.as_bytes();
        let Some((&last_byte, init)) = bytes.split_last() else {
            return;
        };
        let mut symbols: Vec<Symbol> = init
            .iter()
            .map(|&b| self.inner[usize::from(b)])
            .chain(std::iter::once(self.last[usize::from(last_byte)]))
            .enumerate()
            .map(|(i, id)| Symbol {
                id,
                prev: i.checked_sub(1),
                next: (i + 1 < bytes.len()).then_some(i + 1),
                alive: true,
            })
            .collect();

        let mut queue: BinaryHeap<Reverse<(u32, usize)>> = BinaryHeap::new();
        for pos in 0..symbols.len().saturating_sub(1) {
            if let Some(merge) = self.merges.get(&(symbols[pos].id, symbols[pos + 1].id)) {
                queue.push(Reverse((merge.rank, pos)));
            }
        }
        while let Some(Reverse((rank, pos))) = queue.pop() {
            // An entry is stale when its left symbol was absorbed into its neighbour or when either
            // side has been merged into something else since it was queued; ranks are unique per
            // pair, so "the pair here still has this rank" identifies a live entry.
            let left = symbols[pos];
            let Some(right_pos) = left.next.filter(|_| left.alive) else {
                continue;
            };
            let right = symbols[right_pos];
            let Some(merge) = self.merges.get(&(left.id, right.id)) else {
                continue;
            };
            if merge.rank != rank {
                continue;
            }
            symbols[pos].id = merge.merged;
            symbols[pos].next = right.next;
            symbols[right_pos].alive = false;
            if let Some(after) = right.next {
                symbols[after].prev = Some(pos);
                if let Some(m) = self.merges.get(&(merge.merged, symbols[after].id)) {
                    queue.push(Reverse((m.rank, pos)));
                }
            }
            if let Some(before) = left.prev
                && let Some(m) = self.merges.get(&(symbols[before].id, merge.merged))
            {
                queue.push(Reverse((m.rank, before)));
            }
        }

        // Symbol 0 is never absorbed (merges fold the right symbol into the left one).
        let mut cursor = Some(0);
        while let Some(pos) = cursor {
            out.push(symbols[pos].id);
            cursor = symbols[pos].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        assert_eq!(BYTE_CHARS[b'a' as usize], 'a');
        assert_eq!(BYTE_CHARS[b'!' as usize], '!');
        assert_eq!(BYTE_CHARS[0], '\u{100}');
        // Space is the 33rd unprintable byte (0x00..=0x20): U+0120 'Ġ', as in GPT-2 vocabularies.
        assert_eq!(BYTE_CHARS[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_CHARS[0xad], '\u{143}');
        let mut sorted = BYTE_CHARS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256, "the table must be a bijection");
    }

    /// A toy vocabulary: a=0 b=1 c=2, a</w>=3 b</w>=4 c</w>=5, ab=6 bc</w>=7 abc</w>=8, aa=9.
    fn toy() -> BytePairEncoder {
        let mut inner = [u32::MAX; 256];
        let mut last = [u32::MAX; 256];
        for (i, b) in [b'a', b'b', b'c'].into_iter().enumerate() {
            inner[usize::from(b)] = i as u32;
            last[usize::from(b)] = i as u32 + 3;
        }
        let merges = [((0, 1), 6), ((1, 5), 7), ((6, 5), 8), ((0, 0), 9)]
            .into_iter()
            .enumerate()
            .map(|(rank, (pair, merged))| {
                let rank = rank as u32;
                (pair, Merge { rank, merged })
            })
            .collect();
        BytePairEncoder::new(inner, last, merges)
    }

    fn encode(bpe: &BytePairEncoder, word: &str) -> Vec<u32> {
        let mut out = Vec::new();
        bpe.encode_word(word, &mut out);
        out
    }

    #[test]
    fn merges_by_rank_then_position() {
        let bpe = toy();
        // "abc": a+b (rank 0) before b+c</w> (rank 1), then ab+c</w> (rank 2).
        assert_eq!(encode(&bpe, "abc"), vec![8]);
        assert_eq!(encode(&bpe, "c"), vec![5]);
        assert_eq!(encode(&bpe, "ba"), vec![1, 3]);
        // "aaaa" is a a a a</w>: a+a applies leftmost first and a merged pair is not reused,
        // so only the first two pair up (a+a</w> is no rule).
        assert_eq!(encode(&bpe, "aaaa"), vec![9, 0, 3]);
        assert_eq!(encode(&bpe, "aaaaa"), vec![9, 9, 3]);
        assert_eq!(encode(&bpe, ""), Vec::<u32>::new());
    }
}
