//! Chat prompt formats. A model's `tokenizer_config.json` may carry a Jinja `chat_template`;
//! we render it with minijinja the way transformers' `apply_chat_template` does (trim_blocks,
//! lstrip_blocks, `bos_token`/`eos_token`/`add_generation_prompt` in scope, `raise_exception`).
//! Without one we use the Zephyr format TinyLlama-1.1B-Chat-v1.0 was tuned on.

use anyhow::{bail, Context, Result};
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;

/// One chat turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The end-of-turn marker of the Zephyr format (TinyLlama-Chat's EOS token).
pub const ZEPHYR_EOS: &str = "</s>";

const TEMPLATE_NAME: &str = "chat";

/// Private-use characters that bracket the output of a `{% generation %}` block while
/// rendering; they are removed before the text leaves this module.
const GEN_START: char = '\u{10FF01}';
const GEN_END: char = '\u{10FF02}';
/// The filter a `{% generation %}` block is rewritten into (minijinja has no custom tags).
const GEN_FILTER: &str = "tl_generation";

/// A chat prompt format: a compiled Jinja template or the Zephyr fallback.
pub struct ChatTemplate {
    env: Option<Environment<'static>>,
    pub bos_token: String,
    pub eos_token: String,
    /// Whether prompts start with BOS (tokenizer_config's `add_bos_token`, default true); the
    /// BOS is added only when the rendered text does not already begin with it.
    pub add_bos: bool,
    /// Where the template came from, for messages (`tokenizer_config.json` or "built-in Zephyr").
    pub origin: String,
    /// Whether the source has transformers' `{% generation %}` blocks around assistant replies.
    generation_blocks: bool,
}

impl ChatTemplate {
    /// The Zephyr format of TinyLlama-1.1B-Chat-v1.0:
    /// `<|system|>\n{sys}</s>\n<|user|>\n{msg}</s>\n<|assistant|>\n`.
    pub fn zephyr() -> Self {
        ChatTemplate {
            env: None,
            bos_token: String::new(),
            eos_token: ZEPHYR_EOS.into(),
            add_bos: true,
            origin: "built-in Zephyr format".into(),
            generation_blocks: false,
        }
    }

    /// Compiles a Jinja chat template. transformers' `{% generation %}...{% endgeneration %}`
    /// blocks (which mark the assistant's replies for training) are supported: they are
    /// rewritten into a filter block that brackets its output with private-use markers, so
    /// [`ChatTemplate::render_with_generation_spans`] can report where they were; the plain
    /// [`ChatTemplate::render`] strips the markers.
    pub fn from_jinja(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let (source, generation_blocks) = rewrite_generation_tags(source);
        let mut env = Environment::new();
        // transformers renders chat templates with these two options; without them the
        // whitespace around `{% ... %}` tags ends up in the prompt.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", strftime_now);
        env.add_filter(GEN_FILTER, |body: String| -> String {
            format!("{GEN_START}{body}{GEN_END}")
        });
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| anyhow::anyhow!("chat_template does not compile: {e:#}"))?;
        Ok(ChatTemplate {
            env: Some(env),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            add_bos: true,
            origin: "chat_template".into(),
            generation_blocks,
        })
    }

    /// The template of a model directory: `tokenizer_config.json`'s `chat_template` if there is
    /// one, otherwise Zephyr. A present but broken file is an error naming the file and field.
    pub fn load(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join("tokenizer_config.json");
        if !path.exists() {
            return Ok(Self::zephyr());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_tokenizer_config(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of a `tokenizer_config.json`.
    pub fn from_tokenizer_config(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .context("not valid JSON; fix the file or remove it to use the Zephyr chat format")?;
        let token = |key: &str| -> Result<Option<String>> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                // transformers also writes special tokens as AddedToken objects.
                Some(serde_json::Value::Object(o)) => match o.get("content") {
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    _ => bail!("`{key}` is an object without a string `content`"),
                },
                Some(other) => bail!("`{key}` must be a string, got {other}"),
            }
        };
        let bos = token("bos_token")?;
        let eos = token("eos_token")?;
        let add_bos = match v.get("add_bos_token") {
            None | Some(serde_json::Value::Null) => true,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => bail!("`add_bos_token` must be true or false, got {other}"),
        };
        let source = match v.get("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // Several named templates: the one named "default" is the chat template.
            Some(serde_json::Value::Array(list)) => {
                let found = list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == "default")
                        .then(|| t.get("template")?.as_str().map(String::from))
                        .flatten()
                });
                match found {
                    Some(s) => Some(s),
                    None => bail!(
                        "`chat_template` is a list without an entry named \"default\"; \
                         add one or make `chat_template` a single template string"
                    ),
                }
            }
            Some(other) => bail!(
                "`chat_template` must be a string (a Jinja template), got {}",
                type_name(other)
            ),
        };
        let mut t = match source {
            Some(src) => Self::from_jinja(
                &src,
                bos.as_deref().unwrap_or(""),
                eos.as_deref().unwrap_or(""),
            )
            .context("field `chat_template`")?,
            None => Self::zephyr(),
        };
        if let Some(b) = bos {
            t.bos_token = b;
        }
        t.add_bos = add_bos;
        if t.env.is_some() {
            t.origin = "tokenizer_config.json chat_template".into();
        }
        Ok(t)
    }

    pub fn is_zephyr(&self) -> bool {
        self.env.is_none()
    }

    /// Whether the template marks assistant replies with `{% generation %}` blocks.
    pub fn has_generation_blocks(&self) -> bool {
        self.generation_blocks
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let text = self.render_raw(messages, add_generation_prompt)?;
        if !self.generation_blocks {
            return Ok(text);
        }
        Ok(text
            .chars()
            .filter(|&c| c != GEN_START && c != GEN_END)
            .collect())
    }

    /// Renders a conversation and returns, besides the text, the byte ranges of that text that
    /// `{% generation %}` blocks produced, in order (what transformers'
    /// `return_assistant_tokens_mask` tracks). Empty when the template has no such blocks.
    pub fn render_with_generation_spans(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<Range<usize>>)> {
        let raw = self.render_raw(messages, add_generation_prompt)?;
        if !self.generation_blocks {
            return Ok((raw, vec![]));
        }
        if let Some(m) = messages
            .iter()
            .find(|m| m.content.contains([GEN_START, GEN_END]))
        {
            bail!(
                "a `{}` message contains the private-use character U+10FF01 or U+10FF02, which \
                 marks generation blocks while rendering; remove it from the data",
                m.role
            );
        }
        let mut text = String::with_capacity(raw.len());
        let mut spans = Vec::new();
        let mut open: Option<usize> = None;
        let mut depth = 0usize;
        for c in raw.chars() {
            match c {
                GEN_START => {
                    if depth == 0 {
                        open = Some(text.len());
                    }
                    depth += 1;
                }
                GEN_END => {
                    depth = depth
                        .checked_sub(1)
                        .context("unbalanced generation block")?;
                    if depth == 0 {
                        spans.push(open.take().unwrap_or(0)..text.len());
                    }
                }
                _ => text.push(c),
            }
        }
        if depth != 0 {
            bail!(
                "unbalanced generation block in the chat template ({})",
                self.origin
            );
        }
        Ok((text, spans))
    }

    fn render_raw(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let Some(env) = &self.env else {
            return render_zephyr(messages, add_generation_prompt);
        };
        let tmpl = env.get_template(TEMPLATE_NAME)?;
        tmpl.render(minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            add_generation_prompt => add_generation_prompt,
        })
        .map_err(|e| anyhow::anyhow!("rendering the chat template ({}): {e:#}", self.origin))
    }

    /// Text that ends an assistant turn; generation stops there (besides the EOS token).
    pub fn stop_strings(&self) -> Vec<String> {
        if self.eos_token.is_empty() {
            vec![]
        } else {
            vec![self.eos_token.clone()]
        }
    }
}

/// Rewrites `{% generation %}` / `{% endgeneration %}` (any whitespace control) into a filter
/// block, keeping the tags' `-`/`+` modifiers so trim_blocks and lstrip_blocks act as before.
/// Returns the new source and whether any tag was found.
fn rewrite_generation_tags(src: &str) -> (String, bool) {
    let mut out = String::with_capacity(src.len() + 32);
    let mut found = false;
    let mut rest = src;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        // `{%`, an optional modifier, whitespace, the keyword.
        let after_open = &tag[2..];
        let modifier = after_open
            .chars()
            .next()
            .filter(|c| matches!(c, '-' | '+'))
            .map_or(0, |_| 1);
        let body = &after_open[modifier..];
        let ws = body.len() - body.trim_start().len();
        let word_start = 2 + modifier + ws;
        let word: String = tag[word_start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let replacement = match word.as_str() {
            "generation" => Some(format!("filter {GEN_FILTER}")),
            "endgeneration" => Some("endfilter".to_string()),
            _ => None,
        };
        let word_end = word_start + word.len();
        let closes = tag[word_end..]
            .trim_start()
            .trim_start_matches(['-', '+'])
            .starts_with("%}");
        match replacement {
            Some(r) if closes => {
                found = true;
                out.push_str(&tag[..word_start]);
                out.push_str(&r);
                rest = &tag[word_end..];
            }
            _ => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    (out, found)
}

fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn render_zephyr(messages: &[Message], add_generation_prompt: bool) -> Result<String> {
    let mut s = String::new();
    for m in messages {
        match m.role.as_str() {
            "system" | "user" | "assistant" => {}
            other => bail!(
                "message role `{other}` is not supported by the Zephyr chat format; \
                 use system, user or assistant"
            ),
        }
        s.push_str(&format!("<|{}|>\n{}{ZEPHYR_EOS}\n", m.role, m.content));
    }
    if add_generation_prompt {
        s.push_str("<|assistant|>\n");
    }
    Ok(s)
}

/// `strftime_now(format)`, which some templates (Llama 3.x) call for today's date. Supports
/// the directives those templates use: %d %m %Y %y %b %B %H %M %S %%.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS[(mo - 1) as usize];
    let mut out = String::new();
    let mut it = format.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{mo:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TinyLlama-1.1B-Chat-v1.0's tokenizer_config.json chat_template, verbatim.
    const TINYLLAMA_CHAT: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

    /// Llama-2-chat's template (uses bos_token, eos_token, raise_exception and .strip()).
    const LLAMA2_CHAT: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    fn conv() -> Vec<Message> {
        vec![
            Message::new("system", "You are a friendly chatbot."),
            Message::new("user", "Hi!"),
            Message::new("assistant", "Hello there."),
            Message::new("user", "Tell me a story."),
        ]
    }

    #[test]
    fn zephyr_fallback_exact() {
        let t = ChatTemplate::zephyr();
        assert_eq!(
            t.render(&conv(), true).unwrap(),
            "<|system|>\nYou are a friendly chatbot.</s>\n<|user|>\nHi!</s>\n<|assistant|>\nHello there.</s>\n<|user|>\nTell me a story.</s>\n<|assistant|>\n"
        );
        assert_eq!(
            t.render(&conv()[1..2], false).unwrap(),
            "<|user|>\nHi!</s>\n"
        );
        assert_eq!(t.stop_strings(), vec!["</s>".to_string()]);
        let err = t
            .render(&[Message::new("tool", "x")], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("role `tool`"), "{err}");
    }

    #[test]
    fn tinyllama_chat_template_matches_zephyr_fallback() {
        let t = ChatTemplate::from_jinja(TINYLLAMA_CHAT, "<s>", "</s>").unwrap();
        for gen in [true, false] {
            assert_eq!(
                t.render(&conv(), gen).unwrap(),
                ChatTemplate::zephyr().render(&conv(), gen).unwrap()
            );
        }
    }

    #[test]
    fn llama2_template_with_bos_and_exceptions() {
        let t = ChatTemplate::from_jinja(LLAMA2_CHAT, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&conv(), true).unwrap(),
            "<s>[INST] <<SYS>>\nYou are a friendly chatbot.\n<</SYS>>\n\nHi! [/INST] Hello there. </s><s>[INST] Tell me a story. [/INST]"
        );
        let bad = [Message::new("user", "a"), Message::new("user", "b")];
        let err = format!("{:#}", t.render(&bad, true).unwrap_err());
        assert!(err.contains("Conversation roles must alternate"), "{err}");
    }

    #[test]
    fn generation_prompt_and_bos_from_tokenizer_config() {
        let cfg = serde_json::json!({
            "bos_token": {"content": "<BOS>", "lstrip": false},
            "eos_token": "<EOS>",
            "add_bos_token": false,
            "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
        });
        let t = ChatTemplate::from_tokenizer_config(&cfg.to_string()).unwrap();
        assert!(!t.add_bos);
        let msgs = [Message::new("user", "hello")];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<BOS>[user] hello<EOS>\n[assistant] "
        );
        assert_eq!(t.render(&msgs, false).unwrap(), "<BOS>[user] hello<EOS>\n");
        assert_eq!(t.stop_strings(), vec!["<EOS>".to_string()]);
    }

    #[test]
    fn named_templates_and_clear_errors() {
        let cfg = serde_json::json!({
            "chat_template": [
                {"name": "tool_use", "template": "T"},
                {"name": "default", "template": "D{{ messages|length }}"}
            ]
        });
        let t = ChatTemplate::from_tokenizer_config(&cfg.to_string()).unwrap();
        assert_eq!(t.render(&conv(), true).unwrap(), "D4");
        let no_template = ChatTemplate::from_tokenizer_config(r#"{"eos_token": "</s>"}"#).unwrap();
        assert!(no_template.is_zephyr());
        let e = ChatTemplate::from_tokenizer_config(r#"{"chat_template": 3}"#)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("`chat_template` must be a string"));
        let e = ChatTemplate::from_tokenizer_config(r#"{"chat_template": "{% for %}"}"#)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("chat_template"), "{e:#}");
        let e = ChatTemplate::from_tokenizer_config("{not json")
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("not valid JSON"));
    }

    /// Zephyr with transformers' generation blocks around each reply and its EOS.
    const ZEPHYR_GEN: &str = "{% for m in messages %}{% if m.role == 'assistant' %}<|assistant|>\n{% generation %}{{ m.content + eos_token }}{% endgeneration %}{{ '\\n' }}{% else %}<|{{ m.role }}|>\n{{ m.content + eos_token }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

    #[test]
    fn generation_blocks_give_spans_and_vanish_from_plain_renders() {
        let t = ChatTemplate::from_jinja(ZEPHYR_GEN, "<s>", "</s>").unwrap();
        assert!(t.has_generation_blocks());
        let msgs = [
            Message::new("user", "Hi!"),
            Message::new("assistant", "Hello there."),
            Message::new("user", "Bye"),
            Message::new("assistant", "Bye ☺"),
        ];
        let plain = t.render(&msgs, false).unwrap();
        assert_eq!(plain, ChatTemplate::zephyr().render(&msgs, false).unwrap());
        let (text, spans) = t.render_with_generation_spans(&msgs, false).unwrap();
        assert_eq!(text, plain);
        let marked: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(marked, ["Hello there.</s>", "Bye ☺</s>"]);
        // The prompt for the next reply (what `tinyllama chat` renders): no markers.
        let prompt = t.render(&msgs[..3], true).unwrap();
        assert_eq!(
            prompt,
            ChatTemplate::zephyr().render(&msgs[..3], true).unwrap()
        );
        assert!(!prompt.contains([GEN_START, GEN_END]));
        // Content carrying a marker character is refused rather than mis-masked.
        let bad = [Message::new("assistant", "x\u{10FF01}")];
        assert!(t.render_with_generation_spans(&bad, false).is_err());
        // A template without blocks reports none.
        let z = ChatTemplate::from_jinja(TINYLLAMA_CHAT, "<s>", "</s>").unwrap();
        assert!(!z.has_generation_blocks());
        assert!(z
            .render_with_generation_spans(&msgs, false)
            .unwrap()
            .1
            .is_empty());
    }

    #[test]
    fn generation_tags_keep_whitespace_control() {
        // Block tags on their own lines: trim_blocks/lstrip_blocks must treat the rewritten
        // tags as they treat `{% generation %}` in transformers (the newline after a tag goes).
        let src = "{% for m in messages %}\n  {% generation %}\n[{{ m.content }}]\n  {% endgeneration %}\n{%- generation -%}  <{{ m.role }}>  {%- endgeneration %}\n{% endfor %}";
        let t = ChatTemplate::from_jinja(src, "", "").unwrap();
        let (text, spans) = t
            .render_with_generation_spans(&[Message::new("user", "a")], false)
            .unwrap();
        assert_eq!(text, "[a]\n<user>");
        let marked: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(marked, ["[a]\n", "<user>"]);
        let (rewritten, found) = rewrite_generation_tags(src);
        assert!(found);
        assert!(
            rewritten.contains("{%- filter tl_generation -%}"),
            "{rewritten}"
        );
        // Other tags, and words that only start like the keyword, are left alone.
        let (same, found) = rewrite_generation_tags("{% if x %}{% generations %}{{ '{%' }}");
        assert!(!found);
        assert_eq!(same, "{% if x %}{% generations %}{{ '{%' }}");
    }

    #[test]
    fn strftime_directives() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19723), (2024, 1, 1));
        let s = strftime_now("%d %b %Y".into());
        assert_eq!(s.len(), 11, "{s}");
    }
}
