//! CLIP's byte-level BPE tokenizer, giving the ids diffusers feeds to SD's and SDXL's text
//! encoders.
//!
//! # What it reproduces
//!
//! diffusers 0.42 loads `tokenizer/` and `tokenizer_2/` with `transformers.CLIPTokenizer`, which in
//! transformers 5 is the `tokenizers`-backed class (`TokenizersBackend`; the Python "slow"
//! tokenizer with ftfy and `html.unescape` is gone). Its pipeline, which this module rebuilds:
//!
//! 1. **Added tokens on the raw text.** Special tokens declared with `normalized: false` (files.rs
//!    says which ones a folder declares) are cut out of the prompt first and become their ids
//!    directly. In SDXL's `tokenizer_2` that includes its pad token `!`: every `!` in a
//!    prompt is id 0 there, while `tokenizer` gives `!</w>` = 256.
//! 2. **Normaliser**, on each remaining piece: Unicode NFC, then every run of whitespace
//!    (`\s+`, the Unicode `White_Space` set) replaced by one space, then lowercasing char by char
//!    (no final-sigma rule, `İ` → `i̇`). No ftfy, no HTML unescaping, no accent stripping.
//! 3. **Added tokens on the normalised text**: those declared `normalized: true` (SD 1.5 and
//!    SDXL declare `<|startoftext|>` so), matched against their own normalised form.
//! 4. **Pre-tokenizer**: the matches of
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    (first alternative wins), whitespace dropped — so letters run together, every digit stands
//!    alone ("1024" is four words) and punctuation runs together. The byte-level pre-tokenizer
//!    that follows splits each piece again with GPT-2's pattern (`'s|…|'d| ?\p{L}+| ?\p{N}+|
//!    ?[^\s\p{L}\p{N}]+|…`). That only changes the two special-token alternatives:
//!    `<|endoftext|>` typed in other case (so not cut out in step 1 or 3) ends up as the three
//!    words `<|`, `endoftext`, `|>`, and `<|endoftext|>!!` as four, where dropping those
//!    alternatives would give `|>!!`. Both splits are kept, as in transformers.
//! 5. **BPE** per piece on its UTF-8 bytes mapped through GPT-2's byte-to-unicode table, with
//!    `</w>` on the last byte, merges applied by rank (bpe.rs). A byte character missing
//!    from the vocabulary becomes the unk token (never happens with CLIP's vocabulary, which has all
//!    512 byte symbols).
//! 6. For the text encoder: `[bos] + ids[..max_len - 2] + [eos]`, then pad ids up to `max_len`
//!    ([`ClipTokenizer::encode_padded`]), exactly `tokenizer(prompt, padding="max_length",
//!    max_length=tokenizer.model_max_length, truncation=True)`.
//!
//! Parity is checked on a corpus (prompts with weighting syntax, digits, contractions, odd
//! whitespace, case, accents, CJK/Cyrillic/Arabic/Devanagari/Thai, emoji, special-token text, long
//! prompts, random strings) against ids written by tests/fixtures/make_tokenizer_references.py
//! with the real tokenizers of the fixtures, and on the config shapes real Hub repos ship. What is
//! not bit-for-bit guaranteed: characters assigned in Unicode versions newer than the ones the
//! Python wheel's Oniguruma and our `regex` / `icu_normalizer` / std tables know — they would
//! classify differently as letters, digits or lowercase pairs.
//!
//! # Why not the `tokenizers` crate
//!
//! Measured with `tokenizers` 0.23.2 (the Rust side of the 0.23.3 Python wheel transformers
//! uses here), in a `cdylib` that loads a tokenizer.json and encodes one prompt, release profile with
//! `opt-level = "s"`, LTO, one codegen unit, stripped:
//!
//! - **Default features do not build for `wasm32-unknown-unknown`.** The regex engine is
//!   Oniguruma (`onig` feature), C code compiled by `onig_sys`'s build script, which stops there
//!   for want of a C compiler targeting wasm32; given one, Oniguruma still needs a libc the target
//!   does not have (`stdlib.h` not found: rust-onig/rust-onig#153). `esaxx_fast` is C++ as well.
//! - **The wasm build swaps the regex engine.** `default-features = false, features =
//!   ["unstable_wasm"]` builds (it also needs `getrandom`'s `wasm_js` backend configured by hand),
//!   but it matches with `fancy-regex` instead of Oniguruma, and the maintainers' own words for
//!   that mode are "1:1 parity is NOT to be expected" (huggingface/tokenizers#1009). Parity with
//!   the Oniguruma-backed wheel is the one thing this module exists for.
//! - **Size and build cost.** That build compiles 78 crates (rayon, fancy-regex, `regex`,
//!   unicode-normalization-alignments, spm_precompiled, esaxx-rs, daachorse, derive_builder, …)
//!   into a 2.02 MB `.wasm`; the same probe on this module is 1.08 MB, of which 0.99 MB is its
//!   dependencies alone (`regex` with these patterns, `icu_normalizer`'s NFC, `serde_json`). So
//!   CLIP's pipeline costs ~84 KB here against ~1 MB through `tokenizers`. Nor does it add a
//!   crate to Cargo.lock: `regex` is in the engine's tree already (Burn → cubecl → pliron, native
//!   and wasm), and `icu_normalizer`, with the same `compiled_data` feature, in the engine's native
//!   tree (reqwest → url → idna) and the web module's (fresco-protocol → url → idna).
//!
//! CLIP needs one fixed pipeline over two files, which is what this module is.

mod bpe;
mod files;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use icu_normalizer::ComposingNormalizerBorrowed;
use regex::Regex;

use bpe::{BYTE_CHARS, BytePairEncoder, END_OF_WORD};
use files::{SpecialTokens, TokenSpec};

/// CLIP's context length, the `model_max_length` every SD / SDXL tokenizer config states; used
/// when a config states none.
pub const CLIP_CONTEXT_LENGTH: usize = 77;

/// Pieces cached per tokenizer before the cache is emptied; pieces longer than
/// [`CACHED_PIECE_BYTES`] are not cached.
const CACHE_CAPACITY: usize = 10_000;
const CACHED_PIECE_BYTES: usize = 64;

/// CLIP's pre-tokenizer pattern (see the module doc). `regex` uses leftmost-first alternation
/// like Oniguruma, and the same Unicode classes: `\s` = `White_Space`, `\p{L}` / `\p{N}` = the
/// general categories L* / N*.
static PRE_TOKENIZER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    )
    .expect("the CLIP pre-tokenizer pattern is valid")
});

/// GPT-2's split as the byte-level pre-tokenizer applies it, for text without whitespace (the
/// pieces above have none, so its `\s` alternatives and optional leading spaces never apply).
static BYTE_LEVEL_SPLIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+")
        .expect("the GPT-2 split pattern is valid")
});

/// `\w` as the `tokenizers` added vocabulary tests it for `single_word` tokens.
static WORD_CHAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\w$").expect("the word-character pattern is valid"));

/// A problem with a tokenizer file. `file` is the file's name within the tokenizer folder.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A JSON file (vocab.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json)
    /// does not parse.
    #[error("tokenizer file {file} is not valid JSON: {source}")]
    Json {
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A file parses but its content is unusable: a bad id, a malformed merge rule, a token the
    /// vocabulary lacks, a wrong `model_max_length`, … `problem` says which entry.
    #[error("tokenizer file {file}: {problem}")]
    Invalid { file: &'static str, problem: String },
}

/// An added token ready for matching: `pattern` is its text (normalised if it matches after the
/// normaliser).
#[derive(Clone, Debug)]
struct AddedToken {
    pattern: String,
    id: u32,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
}

/// CLIP's tokenizer for one `tokenizer*/` folder of a diffusers repo. See the module doc.
///
/// Cheap to call repeatedly on prompt fragments: the model is built once, and the BPE result of
/// each distinct short word is cached (behind a mutex, so the tokenizer is `Sync`).
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// Added tokens by their text, whether or not the vocabulary has them.
    added_ids: HashMap<String, u32>,
    bpe: BytePairEncoder,
    raw_tokens: Vec<AddedToken>,
    normalized_tokens: Vec<AddedToken>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    vocab_size: usize,
    model_max_length: usize,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl Clone for ClipTokenizer {
    fn clone(&self) -> Self {
        Self {
            vocab: self.vocab.clone(),
            added_ids: self.added_ids.clone(),
            bpe: self.bpe.clone(),
            raw_tokens: self.raw_tokens.clone(),
            normalized_tokens: self.normalized_tokens.clone(),
            bos_id: self.bos_id,
            eos_id: self.eos_id,
            pad_id: self.pad_id,
            vocab_size: self.vocab_size,
            model_max_length: self.model_max_length,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("model_max_length", &self.model_max_length)
            .finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// Builds the tokenizer from the contents of a folder's `vocab.json` and `merges.txt`, and of
    /// its `tokenizer_config.json` and `special_tokens_map.json` when it has them (they name the
    /// bos / eos / pad tokens and `model_max_length`; without them CLIP's defaults apply).
    pub fn from_files(
        vocab_json: &str,
        merges_txt: &str,
        tokenizer_config_json: Option<&str>,
        special_tokens_map_json: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let vocab = files::parse_vocab_json(vocab_json)?;
        let merges = files::parse_merges_txt(merges_txt, &vocab)?;
        let special =
            files::special_tokens(tokenizer_config_json, special_tokens_map_json, Vec::new())?;
        Self::build(vocab, merges, special, files::VOCAB_JSON)
    }

    /// Builds the tokenizer from a `tokenizer.json` (the `tokenizers` library's format, a "BPE"
    /// model), for repos that ship that instead of vocab.json + merges.txt. Its vocabulary,
    /// merges and added tokens are used; the config files play the same part as in
    /// [`ClipTokenizer::from_files`].
    pub fn from_tokenizer_json(
        tokenizer_json: &str,
        tokenizer_config_json: Option<&str>,
        special_tokens_map_json: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let file = files::parse_tokenizer_json(tokenizer_json)?;
        let special = files::special_tokens(
            tokenizer_config_json,
            special_tokens_map_json,
            file.added_tokens,
        )?;
        Self::build(file.vocab, file.merges, special, files::TOKENIZER_JSON)
    }

    fn build(
        vocab: HashMap<String, u32>,
        merges: HashMap<(u32, u32), bpe::Merge>,
        special: SpecialTokens,
        vocab_file: &'static str,
    ) -> Result<Self, TokenizerError> {
        let invalid = |problem: String| TokenizerError::Invalid {
            file: vocab_file,
            problem,
        };

        // Added tokens keep their vocabulary id; one missing from the vocabulary needs the id its
        // declaration gives.
        let mut added_ids: HashMap<String, u32> = HashMap::new();
        let (mut raw_tokens, mut normalized_tokens) = (Vec::new(), Vec::new());
        for TokenSpec {
            content,
            single_word,
            lstrip,
            rstrip,
            normalized,
            id,
        } in &special.added
        {
            let Some(id) = vocab.get(content).copied().or(*id) else {
                return Err(invalid(format!(
                    "the special token {content:?} is not in the vocabulary"
                )));
            };
            added_ids.insert(content.clone(), id);
            let (pattern, list) = if *normalized {
                (normalize(content), &mut normalized_tokens)
            } else {
                (content.clone(), &mut raw_tokens)
            };
            list.push(AddedToken {
                pattern,
                id,
                single_word: *single_word,
                lstrip: *lstrip,
                rstrip: *rstrip,
            });
        }
        let id_of = |role: &str, token: &str| {
            added_ids
                .get(token)
                .or_else(|| vocab.get(token))
                .copied()
                .ok_or_else(|| {
                    invalid(format!(
                        "the {role} token {token:?} is not in the vocabulary"
                    ))
                })
        };
        let bos_id = id_of("bos", &special.bos)?;
        let eos_id = id_of("eos", &special.eos)?;
        let pad_id = id_of("pad", &special.pad)?;
        let vocab_size = vocab.len() + added_ids.keys().filter(|t| !vocab.contains_key(*t)).count();

        // The BPE model's unk is looked up in the vocabulary proper, as in `tokenizers`.
        let unk_id = vocab.get(&special.unk).copied();
        let mut inner = [0; 256];
        let mut last = [0; 256];
        for (byte, c) in BYTE_CHARS.iter().enumerate() {
            for (table, symbol) in [
                (&mut inner, c.to_string()),
                (&mut last, format!("{c}{END_OF_WORD}")),
            ] {
                table[byte] = vocab.get(&symbol).copied().or(unk_id).ok_or_else(|| {
                    invalid(format!(
                        "the byte symbol {symbol:?} (byte {byte:#04x}) is not in the vocabulary, \
                         and neither is the unk token {:?} that would stand for it",
                        special.unk
                    ))
                })?;
            }
        }

        Ok(Self {
            vocab,
            added_ids,
            bpe: BytePairEncoder::new(inner, last, merges),
            raw_tokens,
            normalized_tokens,
            bos_id,
            eos_id,
            pad_id,
            vocab_size,
            model_max_length: special.model_max_length.unwrap_or(CLIP_CONTEXT_LENGTH),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The ids of `text` without bos / eos and without truncation: what
    /// `tokenizer(text, add_special_tokens=False).input_ids` gives. Encoding fragments separately
    /// and concatenating the ids gives the ids of the whole text when every cut falls where the
    /// pre-tokenizer splits anyway (at whitespace, or between a letter and a digit or
    /// punctuation); a cut inside a word changes its BPE.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        // A poisoned lock (a panic elsewhere mid-insert) only costs the cache, not the result.
        let mut cache = self.cache.lock().ok();
        for piece in split_on_added_tokens(text, &self.raw_tokens) {
            let raw = match piece {
                Piece::Token(id) => {
                    ids.push(id);
                    continue;
                }
                Piece::Text(raw) => raw,
            };
            let normalized = normalize(raw);
            for piece in split_on_added_tokens(&normalized, &self.normalized_tokens) {
                match piece {
                    Piece::Token(id) => ids.push(id),
                    Piece::Text(text) => {
                        let pieces = PRE_TOKENIZER.find_iter(text);
                        for word in pieces.flat_map(|p| BYTE_LEVEL_SPLIT.find_iter(p.as_str())) {
                            self.encode_word(word.as_str(), cache.as_deref_mut(), &mut ids);
                        }
                    }
                }
            }
        }
        ids
    }

    fn encode_word(
        &self,
        word: &str,
        cache: Option<&mut HashMap<String, Vec<u32>>>,
        out: &mut Vec<u32>,
    ) {
        let Some(cache) = cache.filter(|_| word.len() <= CACHED_PIECE_BYTES) else {
            self.bpe.encode_word(word, out);
            return;
        };
        if let Some(ids) = cache.get(word) {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        self.bpe.encode_word(word, out);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(word.to_owned(), out[start..].to_vec());
    }

    /// The `max_len` ids diffusers gives the text encoder: bos, the first `max_len - 2` ids of
    /// [`ClipTokenizer::encode`], eos, then the pad id up to `max_len` — i.e.
    /// `tokenizer(text, padding="max_length", max_length=max_len, truncation=True).input_ids`.
    /// Pass [`ClipTokenizer::model_max_length`] for what diffusers passes. The result always holds
    /// bos and eos, so a `max_len` below 2 gives 2 ids.
    pub fn encode_padded(&self, text: &str, max_len: usize) -> Vec<u32> {
        let ids = self.encode(text);
        let mut out = Vec::with_capacity(max_len.max(2));
        out.push(self.bos_id);
        out.extend(ids.iter().take(max_len.saturating_sub(2)));
        out.push(self.eos_id);
        if out.len() < max_len {
            out.resize(max_len, self.pad_id);
        }
        out
    }

    /// The id of `<|startoftext|>` (or whatever the config names `bos_token`).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The id of `<|endoftext|>` (or whatever the config names `eos_token`).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The padding id: 49407 (`<|endoftext|>`) for SD's `tokenizer`, 0 (`!`) for SDXL's
    /// `tokenizer_2`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// `model_max_length` from tokenizer_config.json, or [`CLIP_CONTEXT_LENGTH`] when absent.
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// The id of one vocabulary entry (e.g. `"cat</w>"`) or added token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added_ids
            .get(token)
            .or_else(|| self.vocab.get(token))
            .copied()
    }

    /// The number of ids: vocabulary entries plus added tokens outside it (49408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

/// The normaliser: NFC, whitespace runs → one space, lowercase (char by char).
fn normalize(text: &str) -> String {
    let nfc = ComposingNormalizerBorrowed::new_nfc().normalize(text);
    let mut out = String::with_capacity(nfc.len());
    let mut in_space = false;
    for c in nfc.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            in_space = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Token(u32),
}

/// Cuts the added tokens out of `text`, leftmost match first and the longest of those that start
/// there, with the `single_word` / `lstrip` / `rstrip` rules of the `tokenizers` added vocabulary.
fn split_on_added_tokens<'a>(text: &'a str, tokens: &[AddedToken]) -> Vec<Piece<'a>> {
    let mut pieces = Vec::new();
    let mut emitted = 0; // end of the last piece pushed
    let mut search = 0; // where the next match may start
    while let Some((start, token)) = next_added_token(text, search, tokens) {
        let end = start + token.pattern.len();
        search = end;
        let is_word =
            |c: Option<char>| c.is_some_and(|c| WORD_CHAR.is_match(c.encode_utf8(&mut [0; 4])));
        if token.single_word
            && (is_word(text[..start].chars().next_back()) || is_word(text[end..].chars().next()))
        {
            continue;
        }
        let mut cut_start = start;
        let mut cut_end = end;
        if token.lstrip {
            let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
            cut_start = trimmed.max(emitted);
        }
        if token.rstrip {
            cut_end = text.len() - text[end..].trim_start_matches(char::is_whitespace).len();
            search = cut_end;
        }
        if emitted < cut_start {
            pieces.push(Piece::Text(&text[emitted..cut_start]));
        }
        pieces.push(Piece::Token(token.id));
        emitted = cut_end;
    }
    if emitted < text.len() {
        pieces.push(Piece::Text(&text[emitted..]));
    }
    pieces
}

/// The leftmost added token at or after byte `from` (longest on ties), with its start.
fn next_added_token<'t>(
    text: &str,
    from: usize,
    tokens: &'t [AddedToken],
) -> Option<(usize, &'t AddedToken)> {
    if tokens.is_empty() {
        return None;
    }
    let rest = text.get(from..)?;
    rest.char_indices().find_map(|(offset, _)| {
        let here = &rest[offset..];
        tokens
            .iter()
            .filter(|t| !t.pattern.is_empty() && here.starts_with(t.pattern.as_str()))
            .max_by_key(|t| t.pattern.len())
            .map(|t| (from + offset, t))
    })
}
