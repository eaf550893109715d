//! Reading a tokenizer folder's files: vocab.json, merges.txt, tokenizer.json, and the special
//! tokens declared by tokenizer_config.json / special_tokens_map.json.
//!
//! Which strings of a prompt become special-token ids, and whether they are matched before or
//! after lowercasing, is decided here. The rules follow what transformers 5's `CLIPTokenizer`
//! does when diffusers loads a folder (checked against the Hub's config shapes by
//! tests/fixtures/make_tokenizer_references.py):
//!
//! 1. The "declared" added tokens come from `added_tokens_decoder` in tokenizer_config.json when
//!    it has one; otherwise from tokenizer.json's `added_tokens`, if the folder ships that file.
//! 2. The named special tokens (`bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`,
//!    `cls_token`, `mask_token`) and `additional_special_tokens` / `extra_special_tokens` come
//!    from tokenizer_config.json; special_tokens_map.json overrides them, but only when the config
//!    has no `added_tokens_decoder`. CLIP's defaults fill the gaps: `<|startoftext|>` for bos and
//!    `<|endoftext|>` for eos, unk and pad.
//! 3. A named token whose text is a declared token *is* that token. Any other one is added after
//!    the declared ones: a plain string as a token matched on the raw text (`normalized: false`),
//!    an `AddedToken` object with its own flags. When one text is added twice with different
//!    flags the later one wins — which is how SD 1.5's config, whose `eos_token` object says
//!    `normalized: true` but whose `pad_token` is the plain string `<|endoftext|>`, ends up
//!    matching `<|endoftext|>` on the raw text only.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::TokenizerError;
use super::bpe::Merge;

pub(super) const VOCAB_JSON: &str = "vocab.json";
pub(super) const MERGES_TXT: &str = "merges.txt";
pub(super) const TOKENIZER_JSON: &str = "tokenizer.json";
pub(super) const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";
pub(super) const SPECIAL_TOKENS_MAP_JSON: &str = "special_tokens_map.json";

/// The named special tokens, in the order transformers registers them.
const NAMED: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

fn invalid(file: &'static str, problem: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        file,
        problem: problem.into(),
    }
}

fn parse_object(file: &'static str, text: &str) -> Result<Map<String, Value>, TokenizerError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(invalid(
            file,
            format!("expected a JSON object, found {}", kind(&other)),
        )),
        Err(source) => Err(TokenizerError::Json { file, source }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses vocab.json (or tokenizer.json's `model.vocab`): an object from token to id.
pub(super) fn parse_vocab(
    file: &'static str,
    what: &str,
    vocab: &Map<String, Value>,
) -> Result<HashMap<String, u32>, TokenizerError> {
    if vocab.is_empty() {
        return Err(invalid(file, format!("{what} is empty")));
    }
    vocab
        .iter()
        .map(
            |(token, id)| match id.as_u64().and_then(|id| u32::try_from(id).ok()) {
                Some(id) => Ok((token.clone(), id)),
                None => Err(invalid(
                    file,
                    format!("{what}: the id of token {token:?} is {id}, not an integer in 0..2^32"),
                )),
            },
        )
        .collect()
}

pub(super) fn parse_vocab_json(text: &str) -> Result<HashMap<String, u32>, TokenizerError> {
    parse_vocab(
        VOCAB_JSON,
        "the vocabulary",
        &parse_object(VOCAB_JSON, text)?,
    )
}

/// Looks up one merge rule `left right` and the symbol it makes; `at` names it in errors.
fn merge_rule(
    file: &'static str,
    at: &dyn Fn() -> String,
    left: &str,
    right: &str,
    vocab: &HashMap<String, u32>,
) -> Result<((u32, u32), u32), TokenizerError> {
    let id = |symbol: &str, role: &str| {
        vocab.get(symbol).copied().ok_or_else(|| {
            invalid(
                file,
                format!("{}: the {role} {symbol:?} is not in the vocabulary", at()),
            )
        })
    };
    let pair = (id(left, "left symbol")?, id(right, "right symbol")?);
    let merged = id(&format!("{left}{right}"), "merged symbol")?;
    Ok((pair, merged))
}

/// Adds a rule with the next rank. A pair listed twice keeps its later rank, as in `tokenizers`.
fn push_merge(
    merges: &mut HashMap<(u32, u32), Merge>,
    rank: &mut u32,
    (pair, merged): ((u32, u32), u32),
) {
    merges.insert(
        pair,
        Merge {
            rank: *rank,
            merged,
        },
    );
    *rank += 1;
}

/// Parses merges.txt: an optional `#version` line, then one `left right` rule per line, best
/// (lowest rank) first. Blank lines are skipped.
pub(super) fn parse_merges_txt(
    text: &str,
    vocab: &HashMap<String, u32>,
) -> Result<HashMap<(u32, u32), Merge>, TokenizerError> {
    let mut merges = HashMap::new();
    let mut rank = 0;
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() || (index == 0 && line.starts_with("#version")) {
            continue;
        }
        let at = || format!("line {}", index + 1);
        let mut parts = line.split(' ');
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid(
                MERGES_TXT,
                format!(
                    "{}: expected two symbols separated by one space, found {line:?}",
                    at()
                ),
            ));
        };
        push_merge(
            &mut merges,
            &mut rank,
            merge_rule(MERGES_TXT, &at, left, right, vocab)?,
        );
    }
    if merges.is_empty() {
        return Err(invalid(MERGES_TXT, "it holds no merge rules"));
    }
    Ok(merges)
}

/// An added token as a config file declares it (`AddedToken` in transformers / tokenizers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TokenSpec {
    pub content: String,
    pub single_word: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    /// Matched in the normalised (lowercased, whitespace-collapsed) text instead of the raw one.
    pub normalized: bool,
    /// The id the file gives it; used only when the vocabulary does not contain the token.
    pub id: Option<u32>,
}

/// Reads an `AddedToken` object. `normalized_default` applies when the object omits the flag.
fn parse_token_object(
    file: &'static str,
    what: &str,
    object: &Map<String, Value>,
    normalized_default: fn(special: bool) -> bool,
) -> Result<TokenSpec, TokenizerError> {
    let flag = |name: &str| match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(
            file,
            format!("{what}: `{name}` must be true or false, found {other}"),
        )),
    };
    let Some(Value::String(content)) = object.get("content") else {
        return Err(invalid(
            file,
            format!("{what}: an added token needs a string `content`"),
        ));
    };
    let special = flag("special")?.unwrap_or(false);
    Ok(TokenSpec {
        content: content.clone(),
        single_word: flag("single_word")?.unwrap_or(false),
        lstrip: flag("lstrip")?.unwrap_or(false),
        rstrip: flag("rstrip")?.unwrap_or(false),
        normalized: flag("normalized")?.unwrap_or_else(|| normalized_default(special)),
        id: None,
    })
}

/// `AddedToken`'s own default: special tokens are not normalised, others are.
fn not_special(special: bool) -> bool {
    !special
}

/// special_tokens_map.json marks every token special before building it.
fn never(_special: bool) -> bool {
    false
}

/// A special-token value as written in a config: a plain string or an `AddedToken` object.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Candidate {
    Plain(String),
    Token(TokenSpec),
}

impl Candidate {
    fn content(&self) -> &str {
        match self {
            Candidate::Plain(s) => s,
            Candidate::Token(t) => &t.content,
        }
    }

    fn parse(
        file: &'static str,
        key: &str,
        value: &Value,
        normalized_default: fn(bool) -> bool,
    ) -> Result<Option<Self>, TokenizerError> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(Candidate::Plain(s.clone()))),
            Value::Object(o) => {
                parse_token_object(file, &format!("`{key}`"), o, normalized_default)
                    .map(|t| Some(Candidate::Token(t)))
            }
            other => Err(invalid(
                file,
                format!(
                    "`{key}` must be a string or an AddedToken object, found {}",
                    kind(other)
                ),
            )),
        }
    }
}

/// The special tokens of a tokenizer folder, resolved as described in the module doc.
#[derive(Debug)]
pub(super) struct SpecialTokens {
    /// Every added token, one per text, in registration order.
    pub added: Vec<TokenSpec>,
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
    /// `model_max_length` from tokenizer_config.json; `None` when absent or "unlimited".
    pub model_max_length: Option<usize>,
}

/// Parses tokenizer.json's `added_tokens` array.
pub(super) fn parse_added_tokens_array(list: &[Value]) -> Result<Vec<TokenSpec>, TokenizerError> {
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let what = format!("added_tokens[{i}]");
            let Value::Object(object) = entry else {
                return Err(invalid(TOKENIZER_JSON, format!("{what} is not an object")));
            };
            let mut token = parse_token_object(TOKENIZER_JSON, &what, object, not_special)?;
            token.id = Some(
                object
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| {
                        invalid(TOKENIZER_JSON, format!("{what} has no integer `id`"))
                    })?,
            );
            Ok(token)
        })
        .collect()
}

fn parse_added_tokens_decoder(decoder: &Value) -> Result<Vec<TokenSpec>, TokenizerError> {
    const FILE: &str = TOKENIZER_CONFIG_JSON;
    let Value::Object(entries) = decoder else {
        return Err(invalid(FILE, "`added_tokens_decoder` must be an object"));
    };
    let mut tokens = entries
        .iter()
        .map(|(id, entry)| {
            let what = format!("added_tokens_decoder[{id:?}]");
            let id: u32 = id
                .parse()
                .map_err(|_| invalid(FILE, format!("{what}: the key must be a token id")))?;
            let Value::Object(object) = entry else {
                return Err(invalid(FILE, format!("{what} is not an object")));
            };
            let mut token = parse_token_object(FILE, &what, object, not_special)?;
            token.id = Some(id);
            Ok(token)
        })
        .collect::<Result<Vec<_>, _>>()?;
    tokens.sort_by_key(|t| t.id);
    Ok(tokens)
}

/// Values of `additional_special_tokens` / `extra_special_tokens` (a list, or a name → token map).
fn extra_candidates(
    file: &'static str,
    object: &Map<String, Value>,
    normalized_default: fn(bool) -> bool,
) -> Result<Vec<Candidate>, TokenizerError> {
    let mut out = Vec::new();
    for key in ["additional_special_tokens", "extra_special_tokens"] {
        let values: Vec<&Value> = match object.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(list)) => list.iter().collect(),
            Some(Value::Object(named)) => named.values().collect(),
            Some(other) => {
                return Err(invalid(
                    file,
                    format!("`{key}` must be a list, found {}", kind(other)),
                ));
            }
        };
        for value in values {
            out.extend(Candidate::parse(file, key, value, normalized_default)?);
        }
    }
    Ok(out)
}

/// Reads `model_max_length`. transformers writes 1e30 for "no limit"; anything above `u32::MAX`
/// is taken as that and reported as `None`.
fn model_max_length(config: &Map<String, Value>) -> Result<Option<usize>, TokenizerError> {
    let value = match config.get("model_max_length") {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let unlimited = value.as_f64().is_some_and(|v| v > f64::from(u32::MAX));
    if unlimited {
        return Ok(None);
    }
    match value.as_u64().and_then(|v| usize::try_from(v).ok()) {
        Some(n) if n >= 2 => Ok(Some(n)),
        _ => Err(invalid(
            TOKENIZER_CONFIG_JSON,
            format!(
                "`model_max_length` is {value}; it must be an integer of at least 2 \
                 (room for <|startoftext|> and <|endoftext|>)"
            ),
        )),
    }
}

/// Resolves the special tokens of a folder; `file_tokens` are tokenizer.json's `added_tokens`.
pub(super) fn special_tokens(
    tokenizer_config_json: Option<&str>,
    special_tokens_map_json: Option<&str>,
    file_tokens: Vec<TokenSpec>,
) -> Result<SpecialTokens, TokenizerError> {
    let config = match tokenizer_config_json {
        Some(text) => parse_object(TOKENIZER_CONFIG_JSON, text)?,
        None => Map::new(),
    };
    let map = match special_tokens_map_json {
        Some(text) => parse_object(SPECIAL_TOKENS_MAP_JSON, text)?,
        None => Map::new(),
    };

    // 1. Declared tokens.
    let config_decoder = config.get("added_tokens_decoder");
    let mut declared = match config_decoder {
        Some(decoder) => parse_added_tokens_decoder(decoder)?,
        None => file_tokens,
    };
    declared.sort_by_key(|t| t.id);
    let declared_texts: HashSet<&str> = declared.iter().map(|t| t.content.as_str()).collect();

    // 2. Named and extra special tokens, special_tokens_map.json first unless the config has a
    //    decoder.
    let use_map = config_decoder.is_none();
    let mut named: HashMap<&str, Candidate> = HashMap::new();
    for key in NAMED {
        let from_map = map.get(key).filter(|_| use_map);
        let value = match from_map {
            Some(v) => Candidate::parse(SPECIAL_TOKENS_MAP_JSON, key, v, never)?,
            None => match config.get(key) {
                Some(v) => Candidate::parse(TOKENIZER_CONFIG_JSON, key, v, not_special)?,
                None => None,
            },
        };
        let default = match key {
            "bos_token" => Some("<|startoftext|>"),
            "eos_token" | "unk_token" | "pad_token" => Some("<|endoftext|>"),
            _ => None,
        };
        if let Some(candidate) = value.or_else(|| default.map(|d| Candidate::Plain(d.into()))) {
            named.insert(key, candidate);
        }
    }
    let mut extras = extra_candidates(TOKENIZER_CONFIG_JSON, &config, not_special)?;
    if use_map {
        extras.extend(extra_candidates(SPECIAL_TOKENS_MAP_JSON, &map, never)?);
    }

    // 3. Register: declared tokens, then named / extra ones not already there; later flags win.
    let mut queue: Vec<Candidate> = declared.iter().cloned().map(Candidate::Token).collect();
    let named_in_order = NAMED.iter().filter_map(|key| named.get(key)).cloned();
    for candidate in named_in_order.chain(extras) {
        if !declared_texts.contains(candidate.content()) && !queue.contains(&candidate) {
            queue.push(candidate);
        }
    }
    let mut added: Vec<TokenSpec> = Vec::new();
    for candidate in queue {
        let spec = match candidate {
            Candidate::Token(t) => t,
            Candidate::Plain(content) => TokenSpec {
                content,
                single_word: false,
                lstrip: false,
                rstrip: false,
                normalized: false,
                id: None,
            },
        };
        if spec.content.is_empty() {
            continue;
        }
        match added.iter_mut().find(|t| t.content == spec.content) {
            Some(existing) => {
                *existing = TokenSpec {
                    id: spec.id.or(existing.id),
                    ..spec
                }
            }
            None => added.push(spec),
        }
    }

    let text_of = |key: &str| {
        named
            .get(key)
            .map(|c| c.content().to_owned())
            .unwrap_or_default()
    };
    Ok(SpecialTokens {
        added,
        bos: text_of("bos_token"),
        eos: text_of("eos_token"),
        unk: text_of("unk_token"),
        pad: text_of("pad_token"),
        model_max_length: model_max_length(&config)?,
    })
}

/// The parts of a tokenizer.json this tokenizer uses: the BPE vocabulary, merges and added tokens.
///
/// Its normaliser, pre-tokenizer and post-processor are not read: transformers' `CLIPTokenizer`
/// also takes only the vocabulary and merges from the file and rebuilds CLIP's pipeline.
pub(super) struct TokenizerJson {
    pub vocab: HashMap<String, u32>,
    pub merges: HashMap<(u32, u32), Merge>,
    pub added_tokens: Vec<TokenSpec>,
}

pub(super) fn parse_tokenizer_json(text: &str) -> Result<TokenizerJson, TokenizerError> {
    const FILE: &str = TOKENIZER_JSON;
    let root = parse_object(FILE, text)?;
    let Some(Value::Object(model)) = root.get("model") else {
        return Err(invalid(FILE, "it has no `model` object"));
    };
    match model.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "BPE" => {}
        Some(other) => {
            return Err(invalid(
                FILE,
                format!("`model.type` is {other}; a CLIP tokenizer is a \"BPE\" model"),
            ));
        }
    }
    let Some(Value::Object(vocab)) = model.get("vocab") else {
        return Err(invalid(
            FILE,
            "`model.vocab` must be an object (token → id)",
        ));
    };
    let vocab = parse_vocab(FILE, "model.vocab", vocab)?;
    let Some(Value::Array(rules)) = model.get("merges") else {
        return Err(invalid(FILE, "`model.merges` must be a list"));
    };
    let mut merges = HashMap::new();
    let mut rank = 0;
    for (i, rule) in rules.iter().enumerate() {
        let at = || format!("model.merges[{i}]");
        let pair: Option<(&str, &str)> = match rule {
            // Older files write "left right"; newer ones ["left", "right"].
            Value::String(line) => line.split_once(' ').filter(|(_, r)| !r.contains(' ')),
            Value::Array(parts) => match parts.as_slice() {
                [Value::String(l), Value::String(r)] => Some((l, r)),
                _ => None,
            },
            _ => None,
        };
        let Some((left, right)) = pair else {
            return Err(invalid(
                FILE,
                format!(
                    "{}: expected \"left right\" or [\"left\", \"right\"], found {rule}",
                    at()
                ),
            ));
        };
        push_merge(
            &mut merges,
            &mut rank,
            merge_rule(FILE, &at, left, right, &vocab)?,
        );
    }
    if merges.is_empty() {
        return Err(invalid(FILE, "`model.merges` holds no merge rules"));
    }
    let added_tokens = match root.get("added_tokens") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => parse_added_tokens_array(list)?,
        Some(other) => {
            return Err(invalid(
                FILE,
                format!("`added_tokens` must be a list, found {}", kind(other)),
            ));
        }
    };
    Ok(TokenizerJson {
        vocab,
        merges,
        added_tokens,
    })
}
