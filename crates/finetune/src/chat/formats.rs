//! The chat data formats, converted to messages on read: OpenAI `messages`, ShareGPT
//! `conversations`, Alpaca `instruction`/`input`/`output`, and preference pairs for DPO
//! (`prompt` or `messages`, with `chosen` and `rejected`).

use super::report::Malformed;
use serde_json::{Map, Value};
use tinyllama_infer::chat_template::Message;

/// One usable line.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A conversation for SFT, with its format's name ("openai", "sharegpt", "alpaca").
    Conversation {
        format: &'static str,
        messages: Vec<Message>,
    },
    /// A preference pair: the prompt turns (ending with a user turn) and two responses
    /// (assistant turns).
    Preference {
        prompt: Vec<Message>,
        chosen: Vec<Message>,
        rejected: Vec<Message>,
    },
}

/// Why a line is unusable, with what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: Malformed,
    pub detail: String,
}

impl Problem {
    pub fn new(reason: Malformed, detail: impl Into<String>) -> Self {
        Problem {
            reason,
            detail: detail.into(),
        }
    }
}

type Parsed<T> = Result<T, Problem>;

/// Parses one JSONL line into a record, validating roles and replies.
pub fn parse_line(line: &str) -> Parsed<Record> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| Problem::new(Malformed::BadJson, format!("{e}")))?;
    let Value::Object(obj) = value else {
        return Err(Problem::new(
            Malformed::UnrecognisedShape,
            format!("a JSON {}, not an object", kind(&value)),
        ));
    };
    if obj.contains_key("chosen") || obj.contains_key("rejected") {
        return parse_preference(&obj);
    }
    if let Some(v) = obj.get("messages") {
        let messages = parse_messages(v, "messages", "role", "content")?;
        validate_conversation(&messages)?;
        return Ok(Record::Conversation {
            format: "openai",
            messages,
        });
    }
    if let Some(v) = obj.get("conversations") {
        let messages = parse_messages(v, "conversations", "from", "value")?;
        validate_conversation(&messages)?;
        return Ok(Record::Conversation {
            format: "sharegpt",
            messages,
        });
    }
    if obj.contains_key("instruction") && obj.contains_key("output") {
        return parse_alpaca(&obj);
    }
    Err(Problem::new(
        Malformed::UnrecognisedShape,
        format!("fields found: {}", field_list(&obj)),
    ))
}

fn field_list(obj: &Map<String, Value>) -> String {
    if obj.is_empty() {
        return "none (an empty object)".into();
    }
    obj.keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Maps a role as written in the data to ours (ShareGPT's human/gpt included).
fn normalise_role(role: &str) -> Option<&'static str> {
    match role {
        "system" => Some("system"),
        "user" | "human" => Some("user"),
        "assistant" | "gpt" => Some("assistant"),
        _ => None,
    }
}

/// A text field: a string, or OpenAI's list of `{"type":"text","text":…}` parts.
fn text_of(v: &Value, field: &str) -> Parsed<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for (i, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => s.push_str(t),
                    _ => {
                        return Err(Problem::new(
                            Malformed::BadField,
                            format!(
                                "`{field}[{i}]` is not a {{\"type\":\"text\",\"text\":…}} part"
                            ),
                        ))
                    }
                }
            }
            Ok(s)
        }
        other => Err(Problem::new(
            Malformed::BadField,
            format!("`{field}` is a {}, not a string", kind(other)),
        )),
    }
}

fn parse_messages(v: &Value, field: &str, role_key: &str, text_key: &str) -> Parsed<Vec<Message>> {
    let Value::Array(list) = v else {
        return Err(Problem::new(
            Malformed::BadField,
            format!("`{field}` is a {}, not a list of messages", kind(v)),
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(Problem::new(
                Malformed::BadField,
                format!("`{field}[{i}]` is a {}, not an object", kind(m)),
            ));
        };
        let role = match m.get(role_key) {
            Some(Value::String(r)) => r,
            Some(other) => {
                return Err(Problem::new(
                    Malformed::BadField,
                    format!(
                        "`{field}[{i}].{role_key}` is a {}, not a string",
                        kind(other)
                    ),
                ))
            }
            None => {
                return Err(Problem::new(
                    Malformed::BadField,
                    format!(
                        "`{field}[{i}]` has no `{role_key}` (fields found: {})",
                        field_list(m)
                    ),
                ))
            }
        };
        let Some(role) = normalise_role(role) else {
            return Err(Problem::new(
                Malformed::UnknownRole,
                format!("`{field}[{i}].{role_key}` is `{role}`"),
            ));
        };
        let content = match m.get(text_key) {
            Some(Value::Null) | None => {
                return Err(Problem::new(
                    Malformed::BadField,
                    format!("`{field}[{i}]` has no `{text_key}`"),
                ))
            }
            Some(v) => text_of(v, &format!("{field}[{i}].{text_key}"))?,
        };
        out.push(Message::new(role, &content));
    }
    Ok(out)
}

/// A conversation for SFT: known roles (already checked), at least one assistant reply, none
/// of them empty.
pub fn validate_conversation(messages: &[Message]) -> Parsed<()> {
    for (i, m) in messages.iter().enumerate() {
        if normalise_role(&m.role) != Some(m.role.as_str()) {
            return Err(Problem::new(
                Malformed::UnknownRole,
                format!("message {i} has role `{}`", m.role),
            ));
        }
        if m.role == "assistant" && m.content.trim().is_empty() {
            return Err(Problem::new(
                Malformed::EmptyAssistant,
                format!("message {i} (assistant) is empty"),
            ));
        }
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        return Err(Problem::new(
            Malformed::NoAssistant,
            format!("roles found: [{}]", roles.join(", ")),
        ));
    }
    Ok(())
}

fn parse_alpaca(obj: &Map<String, Value>) -> Parsed<Record> {
    let instruction = text_of(&obj["instruction"], "instruction")?;
    let input = match obj.get("input") {
        None | Some(Value::Null) => String::new(),
        Some(v) => text_of(v, "input")?,
    };
    let output = text_of(&obj["output"], "output")?;
    if instruction.trim().is_empty() && input.trim().is_empty() {
        return Err(Problem::new(
            Malformed::BadField,
            "`instruction` and `input` are both empty",
        ));
    }
    if output.trim().is_empty() {
        return Err(Problem::new(Malformed::EmptyAssistant, "`output` is empty"));
    }
    let mut user = instruction;
    if !input.is_empty() {
        user.push_str("\n\n");
        user.push_str(&input);
    }
    let mut messages = Vec::with_capacity(3);
    if let Some(Value::String(s)) = obj.get("system") {
        if !s.is_empty() {
            messages.push(Message::new("system", s));
        }
    }
    messages.push(Message::new("user", &user));
    messages.push(Message::new("assistant", &output));
    Ok(Record::Conversation {
        format: "alpaca",
        messages,
    })
}

/// A response: a string (one assistant turn) or a list of assistant messages.
fn parse_response(obj: &Map<String, Value>, field: &str) -> Parsed<Vec<Message>> {
    let v = obj.get(field).ok_or_else(|| {
        Problem::new(
            Malformed::UnrecognisedShape,
            format!(
                "a preference pair needs `chosen` and `rejected`; fields found: {}",
                field_list(obj)
            ),
        )
    })?;
    let messages = match v {
        Value::String(s) => vec![Message::new("assistant", s)],
        Value::Array(_) => parse_messages(v, field, "role", "content")?,
        other => {
            return Err(Problem::new(
                Malformed::BadField,
                format!(
                    "`{field}` is a {}, not a string or a list of messages",
                    kind(other)
                ),
            ))
        }
    };
    if let Some((i, m)) = messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.role != "assistant")
    {
        return Err(Problem::new(
            Malformed::BadField,
            format!(
                "`{field}[{i}]` has role {}; a response holds assistant turns only (the prompt \
                 goes in `prompt` or `messages`)",
                m.role
            ),
        ));
    }
    if messages.is_empty() || messages.iter().any(|m| m.content.trim().is_empty()) {
        return Err(Problem::new(
            Malformed::EmptyAssistant,
            format!("`{field}` is empty"),
        ));
    }
    Ok(messages)
}

fn parse_preference(obj: &Map<String, Value>) -> Parsed<Record> {
    let prompt = match (obj.get("prompt"), obj.get("messages")) {
        (Some(Value::String(s)), _) => vec![Message::new("user", s)],
        (Some(v @ Value::Array(_)), _) => parse_messages(v, "prompt", "role", "content")?,
        (Some(other), _) => {
            return Err(Problem::new(
                Malformed::BadField,
                format!(
                    "`prompt` is a {}, not a string or a list of messages",
                    kind(other)
                ),
            ))
        }
        (None, Some(v)) => parse_messages(v, "messages", "role", "content")?,
        (None, None) => {
            return Err(Problem::new(
                Malformed::UnrecognisedShape,
                format!(
                    "a preference pair needs `prompt` (or `messages`); fields found: {}",
                    field_list(obj)
                ),
            ))
        }
    };
    let chosen = parse_response(obj, "chosen")?;
    let rejected = parse_response(obj, "rejected")?;
    match prompt.last() {
        Some(m) if m.role == "user" && !m.content.trim().is_empty() => {}
        Some(m) => {
            return Err(Problem::new(
                Malformed::PromptNotUser,
                format!("the prompt's last turn is {}", describe_turn(m)),
            ))
        }
        None => {
            return Err(Problem::new(
                Malformed::PromptNotUser,
                "the prompt is empty",
            ))
        }
    }
    if let Some((i, m)) = prompt
        .iter()
        .enumerate()
        .find(|(_, m)| m.role == "assistant" && m.content.trim().is_empty())
    {
        return Err(Problem::new(
            Malformed::EmptyAssistant,
            format!("prompt turn {i} ({}) is empty", m.role),
        ));
    }
    Ok(Record::Preference {
        prompt,
        chosen,
        rejected,
    })
}

fn describe_turn(m: &Message) -> String {
    if m.content.trim().is_empty() {
        format!("an empty {} turn", m.role)
    } else {
        format!("a {} turn", m.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(line: &str) -> (&'static str, Vec<Message>) {
        match parse_line(line).unwrap() {
            Record::Conversation { format, messages } => (format, messages),
            other => panic!("{other:?}"),
        }
    }

    fn problem(line: &str) -> Problem {
        parse_line(line).unwrap_err()
    }

    #[test]
    fn openai_multi_turn_and_text_parts() {
        let (f, m) = conv(
            r#"{"messages":[{"role":"system","content":"S"},{"role":"user","content":"Q1"},{"role":"assistant","content":"A1"},{"role":"user","content":[{"type":"text","text":"Q"},{"type":"text","text":"2"}]},{"role":"assistant","content":"A2","name":"x"}]}"#,
        );
        assert_eq!(f, "openai");
        assert_eq!(
            m,
            vec![
                Message::new("system", "S"),
                Message::new("user", "Q1"),
                Message::new("assistant", "A1"),
                Message::new("user", "Q2"),
                Message::new("assistant", "A2"),
            ]
        );
    }

    #[test]
    fn sharegpt_roles_are_mapped() {
        let (f, m) = conv(
            r#"{"id":"7","conversations":[{"from":"system","value":"S"},{"from":"human","value":"hi"},{"from":"gpt","value":"hello"},{"from":"user","value":"and?"},{"from":"assistant","value":"done"}]}"#,
        );
        assert_eq!(f, "sharegpt");
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
        assert_eq!(m[2].content, "hello");
    }

    #[test]
    fn alpaca_with_and_without_input() {
        let (f, m) = conv(r#"{"instruction":"Add","input":"2 and 3","output":"5"}"#);
        assert_eq!(f, "alpaca");
        assert_eq!(
            m,
            vec![
                Message::new("user", "Add\n\n2 and 3"),
                Message::new("assistant", "5")
            ]
        );
        for line in [
            r#"{"instruction":"Say hi","input":"","output":"hi"}"#,
            r#"{"instruction":"Say hi","output":"hi"}"#,
            r#"{"instruction":"Say hi","input":null,"output":"hi"}"#,
        ] {
            assert_eq!(conv(line).1[0], Message::new("user", "Say hi"));
        }
        let e = problem(r#"{"instruction":"Say hi","input":"","output":" "}"#);
        assert_eq!(e.reason, Malformed::EmptyAssistant);
    }

    #[test]
    fn preference_shapes() {
        let want_prompt = vec![Message::new("user", "Q")];
        for line in [
            r#"{"prompt":"Q","chosen":"good","rejected":"bad"}"#,
            r#"{"messages":[{"role":"user","content":"Q"}],"chosen":"good","rejected":"bad"}"#,
            r#"{"prompt":[{"role":"user","content":"Q"}],"chosen":[{"role":"assistant","content":"good"}],"rejected":[{"role":"assistant","content":"bad"}]}"#,
        ] {
            let Record::Preference {
                prompt,
                chosen,
                rejected,
            } = parse_line(line).unwrap()
            else {
                panic!("{line}")
            };
            assert_eq!(prompt, want_prompt);
            assert_eq!(chosen, vec![Message::new("assistant", "good")]);
            assert_eq!(rejected, vec![Message::new("assistant", "bad")]);
        }
        let e = problem(
            r#"{"messages":[{"role":"user","content":"Q"},{"role":"assistant","content":"A"}],"chosen":"g","rejected":"b"}"#,
        );
        assert_eq!(e.reason, Malformed::PromptNotUser);
        assert!(e.detail.contains("assistant turn"), "{}", e.detail);
        let e = problem(r#"{"prompt":"Q","chosen":"g","rejected":""}"#);
        assert_eq!(
            (e.reason, e.detail.as_str()),
            (Malformed::EmptyAssistant, "`rejected` is empty")
        );
        let e = problem(r#"{"prompt":"Q","chosen":"g"}"#);
        assert_eq!(e.reason, Malformed::UnrecognisedShape);
        assert!(e.detail.contains("`chosen`"), "{}", e.detail);
        let e =
            problem(r#"{"prompt":"Q","chosen":[{"role":"user","content":"x"}],"rejected":"b"}"#);
        assert_eq!(e.reason, Malformed::BadField);
    }

    #[test]
    fn every_malformed_reason_with_details() {
        let e = problem(r#"{"messages": [ "#);
        assert_eq!(e.reason, Malformed::BadJson);
        let e = problem(r#"{"text":"hello","meta":1}"#);
        assert_eq!(e.reason, Malformed::UnrecognisedShape);
        assert!(e.detail.starts_with("fields found: "), "{}", e.detail);
        assert!(e.detail.contains("`text`") && e.detail.contains("`meta`"));
        let e = problem("[1,2]");
        assert_eq!(
            (e.reason, e.detail.as_str()),
            (Malformed::UnrecognisedShape, "a JSON array, not an object")
        );
        let e = problem(r#"{"messages":[{"role":"bot","content":"x"}]}"#);
        assert_eq!(
            (e.reason, e.detail.as_str()),
            (Malformed::UnknownRole, "`messages[0].role` is `bot`")
        );
        let e = problem(
            r#"{"conversations":[{"from":"human","value":"x"},{"from":"gpt","value":""}]}"#,
        );
        assert_eq!(e.reason, Malformed::EmptyAssistant);
        let e = problem(
            r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"x"}]}"#,
        );
        assert_eq!(
            (e.reason, e.detail.as_str()),
            (Malformed::NoAssistant, "roles found: [system, user]")
        );
        let e = problem(r#"{"messages":[{"role":"user","content":3}]}"#);
        assert_eq!(
            (e.reason, e.detail.as_str()),
            (
                Malformed::BadField,
                "`messages[0].content` is a number, not a string"
            )
        );
        let e = problem(r#"{"messages":"hi"}"#);
        assert_eq!(e.reason, Malformed::BadField);
        let e = problem(r#"{"messages":[{"content":"x"}]}"#);
        assert_eq!(e.reason, Malformed::BadField);
        assert!(e.detail.contains("has no `role`"), "{}", e.detail);
    }
}
