//! Parity with transformers' `CLIPTokenizer` on the committed fixtures, and loader errors.
//!
//! The references come from tests/fixtures/make_tokenizer_references.py (see its docstring).

use serde_json::Value;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

fn fixture(path: &str) -> String {
    let path = format!("{FIXTURES}/{path}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn optional_fixture(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("{FIXTURES}/{path}")).ok()
}

fn references() -> Value {
    serde_json::from_str(&fixture("tokenizer_references.json")).expect("references are JSON")
}

fn load_folder(folder: &str) -> ClipTokenizer {
    ClipTokenizer::from_files(
        &fixture(&format!("{folder}/vocab.json")),
        &fixture(&format!("{folder}/merges.txt")),
        optional_fixture(&format!("{folder}/tokenizer_config.json")).as_deref(),
        optional_fixture(&format!("{folder}/special_tokens_map.json")).as_deref(),
    )
    .unwrap_or_else(|e| panic!("loading {folder}: {e}"))
}

fn ids(value: &Value) -> Vec<u32> {
    let list = value.as_array().expect("an id list");
    list.iter()
        .map(|id| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .expect("an id")
        })
        .collect()
}

fn as_usize(value: &Value) -> usize {
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .expect("a count")
}

/// Checks one loaded tokenizer against a references entry (ids, and `cases` paired with `texts`).
fn check(name: &str, tok: &ClipTokenizer, entry: &Value, texts: &[String]) {
    assert_eq!(u64::from(tok.bos_id()), entry["bos_id"], "{name}: bos id");
    assert_eq!(u64::from(tok.eos_id()), entry["eos_id"], "{name}: eos id");
    assert_eq!(u64::from(tok.pad_id()), entry["pad_id"], "{name}: pad id");
    match &entry["model_max_length"] {
        Value::Null => assert_eq!(tok.model_max_length(), CLIP_CONTEXT_LENGTH, "{name}"),
        n => assert_eq!(
            tok.model_max_length(),
            as_usize(n),
            "{name}: model_max_length"
        ),
    }
    let cases = entry["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), texts.len(), "{name}: one case per text");
    let mut failures = Vec::new();
    for (text, case) in texts.iter().zip(cases) {
        let fragment = tok.encode(text);
        if fragment != ids(&case["fragment"]) {
            failures.push(format!(
                "{name} encode({text:?}):\n  ours   {fragment:?}\n  theirs {:?}",
                ids(&case["fragment"])
            ));
        }
        if let Some(expected) = case.get("padded") {
            let padded = tok.encode_padded(text, tok.model_max_length());
            if padded != ids(expected) {
                failures.push(format!(
                    "{name} encode_padded({text:?}):\n  ours   {padded:?}\n  theirs {:?}",
                    ids(expected)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn strings(value: &Value) -> Vec<String> {
    let list = value.as_array().expect("a list of strings");
    list.iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn corpus_matches_transformers_for_every_fixture_tokenizer() {
    let refs = references();
    let corpus = strings(&refs["corpus"]);
    let groups = refs["tokenizers_under_test"].as_array().expect("groups");
    let mut folders = Vec::new();
    for group in groups {
        for folder in strings(&group["folders"]) {
            check(&folder, &load_folder(&folder), group, &corpus);
            folders.push(folder);
        }
    }
    for folder in [
        "tiny-sd15-inpaint/tokenizer",
        "tiny-sdxl-inpaint/tokenizer",
        "tiny-sdxl-inpaint/tokenizer_2",
    ] {
        assert!(
            folders.iter().any(|f| f == folder),
            "{folder} is not tested"
        );
    }
}

#[test]
fn pad_ids_are_read_from_the_configs() {
    let sd = load_folder("tiny-sd15-inpaint/tokenizer");
    let xl = load_folder("tiny-sdxl-inpaint/tokenizer");
    let xl2 = load_folder("tiny-sdxl-inpaint/tokenizer_2");
    assert_eq!(
        (sd.bos_id(), sd.eos_id(), sd.pad_id()),
        (49406, 49407, 49407)
    );
    assert_eq!(xl.pad_id(), 49407);
    assert_eq!(
        (xl2.bos_id(), xl2.eos_id(), xl2.pad_id()),
        (49406, 49407, 0)
    );
    assert_eq!(sd.vocab_size(), 49408);
    let padded = xl2.encode_padded("a cat", 77);
    assert_eq!(&padded[..4], &[49406, 320, 2368, 49407]);
    assert!(padded[4..].iter().all(|&id| id == 0));
    // tokenizer_2 declares "!" special: it is cut out before BPE and is id 0, not "!</w>".
    assert_eq!(xl.encode("wow!"), vec![2781, 256]);
    assert_eq!(xl2.encode("wow!"), vec![2781, 0]);
}

/// Builds a tokenizer.json from a references skeleton and a folder's vocab.json / merges.txt,
/// with merges as `["a", "b"]` pairs (as `tokenizers` writes them now) or `"a b"` strings.
fn tokenizer_json(skeleton: &str, folder: &str, pair_merges: bool) -> String {
    let mut json: Value = serde_json::from_str(skeleton).expect("skeleton is JSON");
    json["model"]["vocab"] =
        serde_json::from_str(&fixture(&format!("{folder}/vocab.json"))).expect("vocab");
    let merges = fixture(&format!("{folder}/merges.txt"));
    let rules = merges.lines().skip(1).filter(|l| !l.is_empty());
    json["model"]["merges"] = if pair_merges {
        rules
            .map(|l| {
                let (a, b) = l.split_once(' ').expect("a merge rule");
                Value::from(vec![a, b])
            })
            .collect()
    } else {
        rules.map(Value::from).collect()
    };
    json.to_string()
}

#[test]
fn hub_config_shapes_and_tokenizer_json_match_transformers() {
    let refs = references();
    for variant in refs["variants"].as_array().expect("variants") {
        let name = variant["name"].as_str().expect("name");
        let base = variant["base"].as_str().expect("base");
        let files = &variant["files"];
        let file = |n: &str| files.get(n).and_then(Value::as_str);
        let config = file("tokenizer_config.json");
        let map = file("special_tokens_map.json");
        let tok = match file("tokenizer.json") {
            Some(skeleton) => {
                let json = tokenizer_json(skeleton, base, true);
                ClipTokenizer::from_tokenizer_json(&json, config, map)
            }
            None => ClipTokenizer::from_files(
                &fixture(&format!("{base}/vocab.json")),
                &fixture(&format!("{base}/merges.txt")),
                config,
                map,
            ),
        }
        .unwrap_or_else(|e| panic!("loading variant {name}: {e}"));
        let texts: Vec<String> = variant["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| c["text"].as_str().expect("text").to_owned())
            .collect();
        check(name, &tok, variant, &texts);
    }
}

#[test]
fn tokenizer_json_with_string_merges_equals_vocab_and_merges() {
    let refs = references();
    let variants = refs["variants"].as_array().expect("variants");
    let skeleton = variants
        .iter()
        .find_map(|v| v["files"]["tokenizer.json"].as_str())
        .expect("a tokenizer.json variant");
    let folder = "tiny-sdxl-inpaint/tokenizer_2";
    let from_json =
        ClipTokenizer::from_tokenizer_json(&tokenizer_json(skeleton, folder, false), None, None)
            .expect("tokenizer.json with string merges");
    let from_files = ClipTokenizer::from_files(
        &fixture(&format!("{folder}/vocab.json")),
        &fixture(&format!("{folder}/merges.txt")),
        None,
        None,
    )
    .expect("vocab.json + merges.txt");
    for text in strings(&refs["corpus"]) {
        // The skeleton's added tokens include "!", which the bare files do not declare.
        let text = text.replace('!', "?");
        assert_eq!(
            from_json.encode(&text),
            from_files.encode(&text),
            "{text:?}"
        );
    }
}

#[test]
fn encode_is_stable_across_the_cache_and_clones() {
    let tok = load_folder("tiny-sdxl-inpaint/tokenizer");
    let text = "photo of a cat sitting on a bench, photo of a cat";
    let first = tok.encode(text);
    assert_eq!(tok.encode(text), first);
    assert_eq!(tok.clone().encode(text), first);
    // Fragments concatenate to the whole when cut at whitespace.
    let mut joined = tok.encode("photo of a cat");
    joined.extend(tok.encode(" sitting on a bench, photo of a cat"));
    assert_eq!(joined, first);
}

#[test]
fn encode_padded_truncates_to_max_len() {
    let tok = load_folder("tiny-sd15-inpaint/tokenizer");
    let body = tok.encode("a cat on a mat");
    assert_eq!(body.len(), 5);
    assert_eq!(
        tok.encode_padded("a cat on a mat", 5),
        [49406, 320, 2368, 525, 49407]
    );
    assert_eq!(tok.encode_padded("a cat on a mat", 2), [49406, 49407]);
    assert_eq!(tok.encode_padded("a cat on a mat", 0), [49406, 49407]);
    assert_eq!(tok.encode_padded("", 4), [49406, 49407, 49407, 49407]);
}

#[test]
fn normaliser_and_splitter_pieces() {
    assert_eq!(normalize("  Café\u{301}\t\nNAÏVE  "), " café́ naïve ");
    assert_eq!(normalize("ΣΑΣ İ"), "σασ i\u{307}");
    let pieces: Vec<&str> = PRE_TOKENIZER
        .find_iter("don't 1024x3.5 ''s <|endoftext|>!!")
        .map(|m| m.as_str())
        .collect();
    assert_eq!(
        pieces,
        [
            "don",
            "'t",
            "1",
            "0",
            "2",
            "4",
            "x",
            "3",
            ".",
            "5",
            "''",
            "s",
            "<|endoftext|>",
            "!!"
        ]
    );
}

#[test]
fn added_token_flags() {
    let token = |pattern: &str, single_word, lstrip, rstrip| AddedToken {
        pattern: pattern.into(),
        id: 7,
        single_word,
        lstrip,
        rstrip,
    };
    use Piece::{Text, Token};
    let plain = [
        token("<x>", false, false, false),
        token("<x><y>", false, false, false),
    ];
    assert_eq!(
        split_on_added_tokens("a<x><y>b<x>", &plain),
        [Text("a"), Token(7), Text("b"), Token(7)]
    );
    let stripping = [token("<x>", false, true, true)];
    assert_eq!(
        split_on_added_tokens("a  <x>  b", &stripping),
        [Text("a"), Token(7), Text("b")]
    );
    let word = [token("cat", true, false, false)];
    assert_eq!(
        split_on_added_tokens("cats cat", &word),
        [Text("cats "), Token(7)]
    );
}

// ---------------------------------------------------------------- errors on malformed files

const TINY_VOCAB: &str = r#"{"a": 0, "b": 1, "ab</w>": 2, "b</w>": 3}"#;

fn error_of(result: Result<ClipTokenizer, TokenizerError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} does not mention {part:?}"
        );
    }
}

#[test]
fn malformed_vocab_is_reported() {
    let merges = "#version: 0.2\na b</w>\n";
    let e = error_of(ClipTokenizer::from_files("{\"a\": 0,", merges, None, None));
    assert_mentions(&e, &["vocab.json", "not valid JSON"]);
    let e = error_of(ClipTokenizer::from_files("[1, 2]", merges, None, None));
    assert_mentions(&e, &["vocab.json", "expected a JSON object", "an array"]);
    let e = error_of(ClipTokenizer::from_files(
        r#"{"a": -1}"#,
        merges,
        None,
        None,
    ));
    assert_mentions(&e, &["vocab.json", "\"a\"", "-1"]);
    let e = error_of(ClipTokenizer::from_files("{}", merges, None, None));
    assert_mentions(&e, &["vocab.json", "empty"]);
}

#[test]
fn malformed_merges_are_reported() {
    let e = error_of(ClipTokenizer::from_files(
        TINY_VOCAB,
        "#version: 0.2\na b c\n",
        None,
        None,
    ));
    assert_mentions(&e, &["merges.txt", "line 2", "two symbols", "a b c"]);
    let e = error_of(ClipTokenizer::from_files(TINY_VOCAB, "a\tb\n", None, None));
    assert_mentions(&e, &["merges.txt", "line 1"]);
    let e = error_of(ClipTokenizer::from_files(
        TINY_VOCAB,
        "a b\nz b\n",
        None,
        None,
    ));
    assert_mentions(&e, &["merges.txt", "line 1", "merged symbol", "\"ab\""]);
    let e = error_of(ClipTokenizer::from_files(
        TINY_VOCAB,
        "a b</w>\nz b\n",
        None,
        None,
    ));
    assert_mentions(&e, &["merges.txt", "line 2", "left symbol", "\"z\""]);
    let e = error_of(ClipTokenizer::from_files(
        TINY_VOCAB,
        "#version: 0.2\n",
        None,
        None,
    ));
    assert_mentions(&e, &["merges.txt", "no merge rules"]);
}

#[test]
fn missing_symbols_and_bad_configs_are_reported() {
    let merges = "a b</w>\n";
    // The toy vocabulary lacks most byte symbols and has no <|endoftext|> to stand in for them.
    let e = error_of(ClipTokenizer::from_files(TINY_VOCAB, merges, None, None));
    assert_mentions(&e, &["vocab.json", "not in the vocabulary"]);

    let sdxl = "tiny-sdxl-inpaint/tokenizer_2";
    let vocab = fixture(&format!("{sdxl}/vocab.json"));
    let merges = fixture(&format!("{sdxl}/merges.txt"));
    let load = |config: &str| ClipTokenizer::from_files(&vocab, &merges, Some(config), None);
    let e = error_of(load(r#"{"pad_token": "<pad>"}"#));
    assert_mentions(&e, &["\"<pad>\"", "not in the vocabulary"]);
    let e = error_of(load(r#"{"model_max_length": 1}"#));
    assert_mentions(
        &e,
        &["tokenizer_config.json", "model_max_length", "at least 2"],
    );
    let e = error_of(load(r#"{"pad_token": 5}"#));
    assert_mentions(&e, &["tokenizer_config.json", "pad_token", "a number"]);
    let e = error_of(load(r#"{"added_tokens_decoder": {"x": {"content": "!"}}}"#));
    assert_mentions(
        &e,
        &["tokenizer_config.json", "added_tokens_decoder", "token id"],
    );
    let e = error_of(load("not json"));
    assert_mentions(&e, &["tokenizer_config.json", "not valid JSON"]);
    // transformers' "no limit" sentinel falls back to CLIP's context length.
    let tok = load(r#"{"model_max_length": 1000000000000000019884624838656}"#).expect("loads");
    assert_eq!(tok.model_max_length(), CLIP_CONTEXT_LENGTH);
}

#[test]
fn malformed_tokenizer_json_is_reported() {
    let e = error_of(ClipTokenizer::from_tokenizer_json("{", None, None));
    assert_mentions(&e, &["tokenizer.json", "not valid JSON"]);
    let e = error_of(ClipTokenizer::from_tokenizer_json(
        r#"{"model": {"type": "Unigram", "vocab": []}}"#,
        None,
        None,
    ));
    assert_mentions(&e, &["tokenizer.json", "Unigram", "BPE"]);
    let json =
        format!(r#"{{"model": {{"type": "BPE", "vocab": {TINY_VOCAB}, "merges": [["a"]]}}}}"#);
    let e = error_of(ClipTokenizer::from_tokenizer_json(&json, None, None));
    assert_mentions(&e, &["tokenizer.json", "model.merges[0]"]);
    let json =
        format!(r#"{{"model": {{"type": "BPE", "vocab": {TINY_VOCAB}, "merges": ["a q"]}}}}"#);
    let e = error_of(ClipTokenizer::from_tokenizer_json(&json, None, None));
    assert_mentions(&e, &["tokenizer.json", "model.merges[0]", "\"q\""]);
    let e = error_of(ClipTokenizer::from_tokenizer_json(
        r#"{"model": {}}"#,
        None,
        None,
    ));
    assert_mentions(&e, &["tokenizer.json", "model.vocab"]);
}

#[test]
fn missing_byte_symbols_need_an_unk_token_in_the_vocabulary() {
    let vocab =
        r#"{"a": 0, "b": 1, "ab</w>": 2, "b</w>": 3, "<|startoftext|>": 4, "<|endoftext|>": 5}"#;
    let merges = "a b</w>\n";
    let config = r#"{"unk_token": "<unk>",
        "added_tokens_decoder": {"6": {"content": "<unk>", "special": true}}}"#;
    let e = error_of(ClipTokenizer::from_files(vocab, merges, Some(config), None));
    assert_mentions(&e, &["vocab.json", "byte symbol", "\"<unk>\""]);
    // With <|endoftext|> as unk (CLIP's default) every unknown byte becomes its id.
    let tok = ClipTokenizer::from_files(vocab, merges, None, None).expect("loads");
    assert_eq!(tok.encode("ab zb"), [2, 5, 3]);
    assert_eq!(tok.vocab_size(), 6);
}
