//! The first answer token's top-k candidates, from the response shapes servers actually send.
//!
//! - Chat completions (OpenAI, vLLM, SGLang, llama.cpp) and llama.cpp's `/v1/completions`:
//!   `choices[0].logprobs.content[0] = {token, logprob, top_logprobs: [{token, logprob}]}`.
//! - Legacy completions (OpenAI, vLLM): `choices[0].logprobs = {tokens, token_logprobs,
//!   top_logprobs: [{token: logprob, …}]}`.
//!
//! The sampled token is added when the top-k list lacks it, and each spelling is kept once: a
//! token counted twice would double its mass in the Yes/No log-sum-exp.

use serde_json::Value;

/// What a 200 response said about the first answer token.
#[derive(Debug, Clone, PartialEq)]
pub enum FirstToken {
    /// (token text, logprob) candidates, most likely first as the server sent them.
    Candidates(Vec<(String, f32)>),
    /// The model produced no token at all (e.g. end of sequence at once), or one the server
    /// will not show (see [`first_token`]): deterministic, so the pair is missing rather than
    /// retried.
    Empty,
}

fn push_unique(out: &mut Vec<(String, f32)>, tok: &str, lp: Option<f64>) {
    if let Some(lp) = lp {
        if !out.iter().any(|(t, _)| t == tok) {
            out.push((tok.to_string(), lp as f32));
        }
    }
}

/// Parse the first token's candidates. `Err` means the response is unusable (no choices, no
/// logprobs, an error object): perhaps transient, so the caller retries it.
pub fn first_token(resp: &Value) -> Result<FirstToken, String> {
    if let Some(err) = resp.get("error") {
        return Err(format!("the server answered with an error object: {err}"));
    }
    let choice = resp
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("the response has no choices")?;
    let Some(lp) = choice.get("logprobs").filter(|v| !v.is_null()) else {
        if holds_back_an_incomplete_character(choice) {
            return Ok(FirstToken::Empty);
        }
        return Err(
            "the response has no logprobs (does the server support logprobs / top_logprobs?)"
                .into(),
        );
    };
    let mut out = Vec::new();
    if let Some(content) = lp.get("content").and_then(Value::as_array) {
        let Some(first) = content.first() else {
            return Ok(FirstToken::Empty);
        };
        let tops = first
            .get("top_logprobs")
            .and_then(Value::as_array)
            .ok_or("logprobs.content[0] has no top_logprobs")?;
        for t in tops {
            if let Some(tok) = t.get("token").and_then(Value::as_str) {
                push_unique(&mut out, tok, t.get("logprob").and_then(Value::as_f64));
            }
        }
        if let Some(tok) = first.get("token").and_then(Value::as_str) {
            push_unique(&mut out, tok, first.get("logprob").and_then(Value::as_f64));
        }
    } else if let Some(tops) = lp.get("top_logprobs").and_then(Value::as_array) {
        let Some(first) = tops.first() else {
            return Ok(FirstToken::Empty);
        };
        let map = first
            .as_object()
            .ok_or("logprobs.top_logprobs[0] is not an object")?;
        let mut pairs: Vec<(&String, f64)> = map
            .iter()
            .filter_map(|(k, v)| v.as_f64().map(|f| (k, f)))
            .collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (tok, l) in pairs {
            push_unique(&mut out, tok, Some(l));
        }
        let tok = lp.pointer("/tokens/0").and_then(Value::as_str);
        let l = lp.pointer("/token_logprobs/0").and_then(Value::as_f64);
        if let Some(tok) = tok {
            push_unique(&mut out, tok, l);
        }
    } else {
        return Err("logprobs has neither content nor top_logprobs".into());
    }
    if out.is_empty() {
        return Err("logprobs holds no candidates".into());
    }
    Ok(FirstToken::Candidates(out))
}

/// llama.cpp keeps a sampled token that is an incomplete UTF-8 sequence back until a next token
/// completes it; with `max_tokens: 1` none comes, and the choice ends (`finish_reason: length`)
/// with U+FFFD as its text and no logprobs at all. At temperature 0 every retry gets the same, so
/// retrying only costs the backoff (seconds per pair): the first token is simply not Yes or No.
fn holds_back_an_incomplete_character(choice: &Value) -> bool {
    let text = choice
        .pointer("/message/content")
        .or_else(|| choice.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    choice.get("finish_reason").and_then(Value::as_str) == Some("length")
        && !text.is_empty()
        && text.chars().all(|c| c == '\u{fffd}')
}

/// The generated text of a chat (`message.content`) or completion (`text`) response.
pub fn text(resp: &Value) -> Result<String, String> {
    if let Some(err) = resp.get("error") {
        return Err(format!("the server answered with an error object: {err}"));
    }
    let choice = resp
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("the response has no choices")?;
    choice
        .pointer("/message/content")
        .or_else(|| choice.get("text"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "the response has no message content".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_shape_dedupes_the_sampled_token() {
        let r = json!({"choices":[{"logprobs":{"content":[{"token":" No","logprob":-0.5,
            "top_logprobs":[{"token":" No","logprob":-0.5},{"token":"Yes","logprob":-1.25}]}]}}]});
        assert_eq!(
            first_token(&r).unwrap(),
            FirstToken::Candidates(vec![(" No".into(), -0.5), ("Yes".into(), -1.25)])
        );
    }

    #[test]
    fn sampled_token_added_when_top_list_lacks_it() {
        let r = json!({"choices":[{"logprobs":{"content":[{"token":"Yes","logprob":-3.0,
            "top_logprobs":[{"token":"No","logprob":-0.1}]}]}}]});
        assert_eq!(
            first_token(&r).unwrap(),
            FirstToken::Candidates(vec![("No".into(), -0.1), ("Yes".into(), -3.0)])
        );
    }

    #[test]
    fn legacy_completion_shape() {
        let r = json!({"choices":[{"text":" Yes","logprobs":{"tokens":[" Yes"],"token_logprobs":[-0.2],
            "top_logprobs":[{" No":-2.0," Yes":-0.2,"The":-3.5}]}}]});
        assert_eq!(
            first_token(&r).unwrap(),
            FirstToken::Candidates(vec![
                (" Yes".into(), -0.2),
                (" No".into(), -2.0),
                ("The".into(), -3.5)
            ])
        );
    }

    #[test]
    fn unusable_responses_are_errors_and_empty_is_empty() {
        assert!(first_token(&json!({"choices":[{"message":{"content":"Yes"}}]})).is_err());
        assert!(first_token(&json!({"choices":[{"logprobs":null}]})).is_err());
        assert!(first_token(&json!({"choices":[]})).is_err());
        assert!(first_token(&json!({"error":{"message":"busy"}})).is_err());
        assert_eq!(
            first_token(&json!({"choices":[{"logprobs":{"content":[]}}]})).unwrap(),
            FirstToken::Empty
        );
        // llama.cpp's reply when the one token is half a character: deterministic, not retried.
        let held = json!({"choices":[{"index":0,"finish_reason":"length",
            "message":{"role":"assistant","content":"\u{fffd}"}}]});
        assert_eq!(first_token(&held).unwrap(), FirstToken::Empty);
        // A real text without logprobs (a server that ignores the option) stays an error, and
        // so does U+FFFD where the answer did not end at the token cap.
        let ignored = json!({"choices":[{"finish_reason":"length","message":{"content":"Yes"}}]});
        assert!(first_token(&ignored).is_err());
        let stopped =
            json!({"choices":[{"finish_reason":"stop","message":{"content":"\u{fffd}"}}]});
        assert!(first_token(&stopped).is_err());
        assert_eq!(
            text(&json!({"choices":[{"message":{"content":"hi"}}]})).unwrap(),
            "hi"
        );
        assert_eq!(text(&json!({"choices":[{"text":"yo"}]})).unwrap(), "yo");
    }
}
