//! Reading OpenAI request bodies field by field, so a wrong type or range is a 400 that names
//! the field. Unknown fields are ignored (clients send many); known options this server cannot
//! honour are refused rather than silently dropped.

use crate::error::{ApiError, ApiResult};
use serde_json::{Map, Value};
use tinyllama_engine::sampling::SamplingParams;
use tinyllama_infer::Message;

/// The JSON object of a request body.
pub fn parse_body(body: &[u8]) -> ApiResult<Map<String, Value>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "We could not parse the JSON body of your request ({e}). The body must be a JSON object."
        ))
    })?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(format!(
            "The request body must be a JSON object, got {}",
            type_name(&other)
        ))),
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to optional fields; `null` counts as absent.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn wrong(name: &str, want: &str, v: &Value) -> ApiError {
        ApiError::invalid(
            name,
            format!("`{name}` must be {want}, got {}", type_name(v)),
        )
    }

    pub fn number(&self, name: &str, lo: f64, hi: f64) -> ApiResult<Option<f64>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let x = v.as_f64().ok_or_else(|| Self::wrong(name, "a number", v))?;
        if !(lo..=hi).contains(&x) {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` must be between {lo} and {hi}, got {x}"),
            ));
        }
        Ok(Some(x))
    }

    pub fn integer(&self, name: &str, lo: i64, hi: i64) -> ApiResult<Option<i64>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let x = match (v.as_i64(), v.as_f64()) {
            (Some(i), _) => i,
            // 3.0 is an integer in JSON's eyes.
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9e15 => f as i64,
            _ => return Err(Self::wrong(name, "an integer", v)),
        };
        if !(lo..=hi).contains(&x) {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` must be between {lo} and {hi}, got {x}"),
            ));
        }
        Ok(Some(x))
    }

    pub fn boolean(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong(name, "true or false", v)),
        }
    }

    pub fn string(&self, name: &str) -> ApiResult<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong(name, "a string", v)),
        }
    }

    /// A string or a list of strings.
    pub fn strings(&self, name: &str, max: usize) -> ApiResult<Vec<String>> {
        let out = match self.get(name) {
            None => vec![],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(String::from).ok_or_else(|| {
                        ApiError::invalid(
                            name,
                            format!("`{name}` must hold strings, got {}", type_name(x)),
                        )
                    })
                })
                .collect::<ApiResult<_>>()?,
            Some(v) => return Err(Self::wrong(name, "a string or an array of strings", v)),
        };
        if out.len() > max {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` may hold at most {max} entries, got {}", out.len()),
            ));
        }
        Ok(out)
    }
}

/// Options shared by completions and chat completions.
#[derive(Clone, Debug)]
pub struct Common {
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
    /// Completions per prompt.
    pub n: usize,
    /// Return each token's log-probability with this many alternatives.
    pub logprobs: Option<usize>,
}

impl Common {
    pub fn parse(m: &Map<String, Value>, chat: bool) -> ApiResult<Common> {
        let f = Fields(m);
        // Completions accept 0 (with `echo`, to score a prompt; checked by the handler).
        let max_tokens =
            match f.integer("max_tokens", if chat { 1 } else { 0 }, u32::MAX as i64)? {
                Some(n) => Some(n),
                None if chat => f.integer("max_completion_tokens", 1, u32::MAX as i64)?,
                None => None,
            }
            .map(|n| n as usize);
        let n = f.integer("n", 1, 128)?.unwrap_or(1) as usize;
        for p in ["presence_penalty", "frequency_penalty"] {
            if let Some(x) = f.number(p, -2.0, 2.0)? {
                if x != 0.0 {
                    return Err(ApiError::invalid(
                        p,
                        format!("`{p}` is not supported by this server; use `repetition_penalty` (e.g. 1.1)"),
                    ));
                }
            }
        }
        let logprobs = if chat {
            let top = f.integer("top_logprobs", 0, 20)?.map(|t| t as usize);
            match (f.boolean("logprobs")?.unwrap_or(false), top) {
                (true, top) => Some(top.unwrap_or(0)),
                (false, Some(_)) => {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        "`top_logprobs` needs `logprobs: true`",
                    ))
                }
                (false, None) => None,
            }
        } else {
            f.integer("logprobs", 0, 20)?.map(|t| t as usize)
        };
        if f.integer("best_of", 1, 1)?.is_some_and(|b| b != 1) {
            return Err(ApiError::invalid(
                "best_of",
                "only best_of = 1 is supported",
            ));
        }
        match f.get("logit_bias") {
            None => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    "logit_bias",
                    "`logit_bias` is not supported by this server",
                ))
            }
        }
        let top_k = f.integer("top_k", -1, 1 << 20)?.unwrap_or(0).max(0) as usize;
        let sampling = SamplingParams {
            temperature: f.number("temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32,
            top_k,
            top_p: f.number("top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32,
            min_p: f.number("min_p", 0.0, 1.0)?.unwrap_or(0.0) as f32,
            repetition_penalty: f.number("repetition_penalty", 0.01, 100.0)?.unwrap_or(1.0) as f32,
        };
        let seed = f.integer("seed", i64::MIN, i64::MAX)?.map(|s| s as u64);
        let stop = f.strings("stop", 16)?;
        let stream = f.boolean("stream")?.unwrap_or(false);
        let include_usage = match f.get("stream_options") {
            None => false,
            Some(Value::Object(o)) => Fields(o).boolean("include_usage")?.unwrap_or(false),
            Some(v) => return Err(Fields::wrong("stream_options", "an object", v)),
        };
        Ok(Common {
            max_tokens,
            sampling,
            seed,
            stop,
            stream,
            include_usage,
            ignore_eos: f.boolean("ignore_eos")?.unwrap_or(false),
            n,
            logprobs,
        })
    }
}

/// Refuses options that would change the answer and that this server cannot honour, rather
/// than answering as if they had not been sent. Their neutral values (an empty `tools` list,
/// `response_format: {"type": "text"}`, ...) are accepted.
pub fn refuse_unsupported(m: &Map<String, Value>, chat: bool) -> ApiResult<()> {
    let f = Fields(m);
    let refuse = |name: &str, what: &str| {
        Err(ApiError::invalid(
            name,
            format!("`{name}` is not supported by this server: {what}"),
        ))
    };
    let non_empty_list = |name: &str| match f.get(name) {
        None => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    if chat {
        for name in ["tools", "functions"] {
            if non_empty_list(name) {
                return refuse(name, "the model cannot call tools or functions");
            }
        }
        for name in ["tool_choice", "function_call"] {
            match f.get(name) {
                None => {}
                Some(Value::String(s)) if s == "none" || s == "auto" => {}
                Some(_) => return refuse(name, "the model cannot call tools or functions"),
            }
        }
        match f.get("response_format") {
            None => {}
            Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("text") => {}
            Some(_) => {
                return refuse(
                    "response_format",
                    "output is plain text; JSON mode and JSON schemas are not enforced",
                )
            }
        }
        match f.get("modalities") {
            None => {}
            Some(Value::Array(a)) if a.iter().all(|x| x.as_str() == Some("text")) => {}
            Some(_) => return refuse("modalities", "only text is produced"),
        }
        for name in [
            "audio",
            "prediction",
            "web_search_options",
            "reasoning_effort",
        ] {
            if f.get(name).is_some() {
                return refuse(name, "this option has no meaning for this model");
            }
        }
    }
    Ok(())
}

/// A completions prompt: text, or token ids.
#[derive(Clone, Debug)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// `prompt`: a string, a list of strings, a list of token ids or a list of such lists.
pub fn parse_prompts(m: &Map<String, Value>) -> ApiResult<Vec<Prompt>> {
    let bad = || {
        ApiError::invalid("prompt", "`prompt` must be a string, an array of strings, an array of token ids or an array of arrays of token ids")
    };
    let ids = |a: &Vec<Value>| -> ApiResult<Vec<u32>> {
        a.iter()
            .map(|x| {
                x.as_u64()
                    .filter(|&t| t <= u32::MAX as u64)
                    .map(|t| t as u32)
                    .ok_or_else(bad)
            })
            .collect()
    };
    let prompts = match m.get("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("prompt", "`prompt` is required"));
        }
        Some(Value::String(s)) => vec![Prompt::Text(s.clone())],
        Some(Value::Array(a)) if a.iter().all(|x| x.is_string()) && !a.is_empty() => a
            .iter()
            .map(|x| Prompt::Text(x.as_str().unwrap_or_default().to_string()))
            .collect(),
        Some(Value::Array(a)) if a.iter().all(|x| x.is_number()) && !a.is_empty() => {
            vec![Prompt::Ids(ids(a)?)]
        }
        Some(Value::Array(a)) if a.iter().all(|x| x.is_array()) && !a.is_empty() => a
            .iter()
            .map(|x| ids(x.as_array().expect("checked")).map(Prompt::Ids))
            .collect::<ApiResult<_>>()?,
        _ => return Err(bad()),
    };
    if prompts.len() > 64 {
        return Err(ApiError::invalid(
            "prompt",
            "at most 64 prompts per request",
        ));
    }
    Ok(prompts)
}

/// `messages`: `[{role, content}]` where content is a string or a list of text parts.
pub fn parse_messages(m: &Map<String, Value>) -> ApiResult<Vec<Message>> {
    let list = match m.get("messages") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("messages", "`messages` is required"))
        }
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must hold at least one message",
            ))
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "messages",
                format!("`messages` must be an array, got {}", type_name(v)),
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, msg)| {
            let param = format!("messages[{i}]");
            let o = msg.as_object().ok_or_else(|| {
                ApiError::invalid(&param, format!("{param} must be an object, got {}", type_name(msg)))
            })?;
            let role = match o.get("role") {
                // OpenAI's newer name for the system message.
                Some(Value::String(r)) if r == "developer" => "system".to_string(),
                Some(Value::String(r)) => r.clone(),
                _ => return Err(ApiError::invalid(&format!("{param}.role"), format!("{param}.role must be a string"))),
            };
            let content = match o.get("content") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) if role == "assistant" => String::new(),
                Some(Value::Array(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        match (p.get("type").and_then(|t| t.as_str()), p.get("text").and_then(|t| t.as_str())) {
                            (Some("text"), Some(t)) => s.push_str(t),
                            _ => {
                                return Err(ApiError::invalid(
                                    &format!("{param}.content"),
                                    "only text content parts (`{\"type\": \"text\", \"text\": ...}`) are supported",
                                ))
                            }
                        }
                    }
                    s
                }
                _ => {
                    return Err(ApiError::invalid(
                        &format!("{param}.content"),
                        format!("{param}.content must be a string or an array of text parts"),
                    ))
                }
            };
            Ok(Message { role, content })
        })
        .collect()
}
