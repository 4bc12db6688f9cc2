//! The endpoints: `/health`, `/v1/models`, `/v1/models/{id}`, `/v1/completions`,
//! `/v1/chat/completions` (plain JSON or server-sent events with `stream: true`), and JSON
//! 404/405 for everything else.

use crate::body::{off_thread, read};
use crate::error::{ApiError, ApiResult};
use crate::logprobs::{chat_logprobs, CompletionLogprobs};
use crate::prompt::{encode_chat, ChatEncoder};
use crate::request::{
    parse_body, parse_messages, parse_prompts, refuse_unsupported, Common, Fields, Prompt,
};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tinyllama_infer::batch::{Event, SubmitError};
use tinyllama_infer::stop::StopMatcher;
use tinyllama_infer::text::TextStream;
use tinyllama_infer::{GenParams, TokenLogprob};
use tinyllama_model::tokenizer::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

type St = State<Arc<AppState>>;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn next_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:x}{:06x}",
        now(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn json_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn check_key(st: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(key) = &st.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // RFC 7235: the scheme name is case-insensitive.
        .and_then(|v| {
            let (scheme, rest) = v.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .map(str::trim);
    // Compare without an early exit so timing does not reveal how much of the key matched.
    let ok = given.is_some_and(|g| {
        g.len() == key.len()
            && g.bytes()
                .zip(key.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn check_model(st: &AppState, m: &serde_json::Map<String, Value>) -> ApiResult<()> {
    match Fields(m).string("model")? {
        Some(name) if name != st.model_name => Err(ApiError::not_found(
            format!(
                "The model `{name}` does not exist; this server serves `{}` (see GET /v1/models)",
                st.model_name
            ),
            "model_not_found",
        )),
        _ => Ok(()),
    }
}

pub async fn health(State(st): St) -> Response {
    let (running, waiting) = st.scheduler.load();
    let c = &st.conn_stats;
    json_response(json!({
        "status": "ok",
        "running": running,
        "waiting": waiting,
        "connections": {
            "open": c.open.load(Ordering::Relaxed),
            "shed": c.shed.load(Ordering::Relaxed),
            "timed_out": c.timed_out.load(Ordering::Relaxed),
        },
    }))
}

fn model_object(st: &AppState) -> Value {
    json!({
        "id": st.model_name,
        "object": "model",
        "created": st.created,
        "owned_by": "tinyllama",
        "max_model_len": st.scheduler.runner().context(),
    })
}

pub async fn models(State(st): St, headers: HeaderMap) -> Response {
    if let Err(e) = check_key(&st, &headers) {
        return e.into_response();
    }
    json_response(json!({"object": "list", "data": [model_object(&st)]}))
}

pub async fn model(State(st): St, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = check_key(&st, &headers) {
        return e.into_response();
    }
    // Read from the URI rather than with axum's `Path`, whose rejection (bad percent-encoding)
    // would be a plain-text body instead of OpenAI's error shape.
    let raw = uri.path().strip_prefix("/v1/models/").unwrap_or_default();
    let id = percent_decode(raw);
    if id != st.model_name {
        return ApiError::not_found(
            format!(
                "The model `{id}` does not exist; this server serves `{}`",
                st.model_name
            ),
            "model_not_found",
        )
        .into_response();
    }
    json_response(model_object(&st))
}

/// `%XX` escapes decoded; invalid ones and invalid UTF-8 are kept as they are (the id then
/// simply does not match).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        format!("Unknown request URL: {method} {}", uri.path()),
        "unknown_url",
    )
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("Method {method} is not allowed on {}", uri.path()),
        kind: "invalid_request_error",
        param: None,
        code: Some("method_not_allowed"),
    }
}

/// One generation of a request.
struct Job {
    prompt: Vec<u32>,
    params: GenParams,
    stops: Vec<String>,
    logprobs: Option<usize>,
}

/// What a choice shows of its prompt: the text with `echo`, and its tokens' log-probabilities
/// with `echo` and `logprobs`.
#[derive(Clone, Default)]
pub struct Echo {
    text: String,
    scored: Option<(u32, Vec<TokenLogprob>)>,
}

/// What the decoding thread sends back for choice `.0`.
enum Msg {
    Text(usize, String),
    Logprobs(usize, Vec<TokenLogprob>),
    Done(usize, Usage),
    Error(usize, String),
}

#[derive(Clone, Copy, Default)]
struct Usage {
    finish: &'static str,
    prompt: usize,
    completion: usize,
}

/// A sink that turns tokens into text, applies stop strings and forwards to the handler.
fn text_sink(
    st: &AppState,
    index: usize,
    prompt: &[u32],
    stops: Vec<String>,
    tx: UnboundedSender<Msg>,
) -> tinyllama_infer::batch::Sink {
    let tok = st.tokenizer.clone();
    let mut ts = TextStream::new(prompt);
    let mut sm = StopMatcher::new(&stops);
    let mut done = false;
    let mut hit_stop = false;
    Box::new(move |ev| {
        if done {
            return false;
        }
        match ev {
            Event::Tokens(t) => {
                let piece = match ts.push(&tok, &t) {
                    Ok(p) => p,
                    Err(e) => {
                        done = true;
                        let _ = tx.send(Msg::Error(index, format!("{e:#}")));
                        return false;
                    }
                };
                let (emit, stop) = sm.push(&piece);
                if !emit.is_empty() && tx.send(Msg::Text(index, emit)).is_err() {
                    // The client went away: free the slot.
                    done = true;
                    return false;
                }
                hit_stop = stop;
                !stop
            }
            Event::Logprobs(v) => tx.send(Msg::Logprobs(index, v)).is_ok(),
            Event::Done(sum) => {
                done = true;
                let mut finish = sum.finish.openai();
                if !hit_stop {
                    let (mut rest, stop) = sm.push(&ts.flush(&tok).unwrap_or_default());
                    if stop {
                        finish = "stop";
                    } else {
                        rest.push_str(&sm.flush());
                    }
                    if !rest.is_empty() {
                        let _ = tx.send(Msg::Text(index, rest));
                    }
                } else {
                    finish = "stop";
                }
                let _ = tx.send(Msg::Done(
                    index,
                    Usage {
                        finish,
                        prompt: sum.prompt_tokens,
                        completion: sum.completion_tokens,
                    },
                ));
                false
            }
            Event::Error(e) => {
                done = true;
                let _ = tx.send(Msg::Error(index, e));
                false
            }
        }
    })
}

fn submit(st: &AppState, jobs: Vec<Job>) -> ApiResult<UnboundedReceiver<Msg>> {
    let (tx, rx) = unbounded_channel();
    for (i, j) in jobs.into_iter().enumerate() {
        let sink = text_sink(st, i, &j.prompt, j.stops, tx.clone());
        // On failure `rx` is dropped with this function, so already queued jobs cancel
        // themselves at their first token.
        st.scheduler
            .submit_with_logprobs(&j.prompt, j.params, j.logprobs, sink)
            .map_err(|e| match e {
                SubmitError::QueueFull { .. } | SubmitError::ShuttingDown => {
                    ApiError::busy(e.to_string())
                }
                SubmitError::Invalid(err) => ApiError::bad_request(format!("{err:#}")),
            })?;
    }
    Ok(rx)
}

/// Checks the prompt and completion lengths against the context and builds the parameters.
fn make_job(
    st: &AppState,
    c: &Common,
    prompt: Vec<u32>,
    default_max: Option<usize>,
    mut stops: Vec<String>,
    choice: usize,
) -> ApiResult<Job> {
    let ctx = st.scheduler.runner().context();
    let n = prompt.len();
    if n == 0 {
        return Err(ApiError::invalid(
            "prompt",
            "the prompt is empty; send at least one token",
        ));
    }
    if n >= ctx {
        return Err(ApiError::invalid(
            "messages/prompt",
            format!(
                "This model's maximum context length is {ctx} tokens, however your prompt has {n} tokens, leaving no room for a completion. Please shorten the prompt."
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let max = c.max_tokens.or(default_max).unwrap_or(ctx - n);
    if n + max > ctx {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "This model's maximum context length is {ctx} tokens, however you requested {} tokens ({n} in the prompt, {max} for the completion). Please reduce the prompt or max_tokens.",
                n + max
            ),
        )
        .with_code("context_length_exceeded"));
    }
    stops.extend(c.stop.iter().cloned());
    static SEEDS: AtomicU64 = AtomicU64::new(0);
    Ok(Job {
        prompt,
        params: GenParams {
            max_tokens: max,
            sampling: c.sampling.clone(),
            // With `n > 1` and a seed, the choices differ from each other yet repeat.
            seed: c
                .seed
                .map(|s| s.wrapping_add(choice as u64))
                .unwrap_or_else(|| {
                    now() ^ SEEDS.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                }),
            stop_ids: if c.ignore_eos {
                vec![]
            } else {
                vec![st.tokenizer.eos_id]
            },
        },
        stops,
        logprobs: c.logprobs,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

pub async fn completions(State(st): St, headers: HeaderMap, body: Body) -> Response {
    match completions_inner(&st, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The request body as a JSON object, read under the size and time limits.
async fn request_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<serde_json::Map<String, Value>> {
    check_key(st, headers)?;
    let bytes = read(
        body,
        st.request_limits.max_body_bytes,
        st.limits.body_timeout,
    )
    .await?;
    parse_body(&bytes)
}

/// Refuses prompts × n beyond the per-request limit.
fn check_choices(st: &AppState, prompts: usize, n: usize) -> ApiResult<()> {
    let max = st.request_limits.max_choices;
    if prompts * n > max {
        return Err(ApiError::invalid(
            if n > 1 { "n" } else { "prompt" },
            format!(
                "this request asks for {} completions ({prompts} prompt(s) × n = {n}); this server allows at most {max} per request so that one request cannot take every decoding slot; split it into several requests",
                prompts * n
            ),
        ));
    }
    Ok(())
}

/// Refuses text that cannot fit the context, by its size alone, before tokenising it.
fn check_text_bytes(st: &AppState, param: &str, bytes: usize) -> ApiResult<()> {
    let max = st.request_limits.max_text_bytes;
    if bytes > max {
        return Err(ApiError::invalid(
            param,
            format!(
                "This model's maximum context length is {} tokens and your prompt has {bytes} bytes, more than {max} bytes can fit in it. Please shorten the prompt.",
                st.scheduler.runner().context()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(())
}

async fn completions_inner(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let m = request_body(st, headers, body).await?;
    check_model(st, &m)?;
    refuse_unsupported(&m, false)?;
    let c = Common::parse(&m, false)?;
    let echo = Fields(&m).boolean("echo")?.unwrap_or(false);
    if Fields(&m).string("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            "suffix",
            "`suffix` is not supported by this server",
        ));
    }
    let prompts = parse_prompts(&m)?;
    check_choices(st, prompts.len(), c.n)?;
    for p in &prompts {
        if let Prompt::Text(t) = p {
            check_text_bytes(st, "prompt", t.len())?;
        }
    }
    let tok = st.tokenizer.clone();
    let encoded = off_thread(&st.tokenize_gate, move || {
        prompts
            .into_iter()
            .map(|p| match p {
                Prompt::Text(t) => tok
                    .encode_with_bos(&t)
                    .map(|ids| (ids, t))
                    .map_err(|e| ApiError::invalid("prompt", format!("{e:#}"))),
                Prompt::Ids(ids) => {
                    let text = tok.decode(&ids).unwrap_or_default();
                    Ok((ids, text))
                }
            })
            .collect::<ApiResult<Vec<_>>>()
    })
    .await?;
    if c.max_tokens == Some(0) && !echo {
        return Err(ApiError::invalid(
            "max_tokens",
            "`max_tokens` must be between 1 and the context length (0 is only meaningful with `echo` and `logprobs`, to score the prompt)",
        ));
    }
    let mut jobs = Vec::with_capacity(encoded.len() * c.n);
    let mut echoes = Vec::new();
    for (ids, text) in encoded {
        // Lengths are checked (by make_job) before the prompt is scored.
        for j in 0..c.n {
            // OpenAI's default for completions is 16 tokens.
            jobs.push(make_job(st, &c, ids.clone(), Some(16), vec![], j)?);
        }
        let e = match (echo, c.logprobs) {
            (false, _) => Echo::default(),
            (true, None) => Echo { text, scored: None },
            (true, Some(top)) => {
                let runner = st.scheduler.runner_arc();
                let scored_ids = ids.clone();
                let lps = off_thread(&st.score_gate, move || {
                    runner
                        .score_prompt(&scored_ids, top)
                        .map_err(|e| ApiError::invalid("prompt", format!("{e:#}")))
                })
                .await?;
                Echo {
                    text,
                    scored: Some((ids[0], lps)),
                }
            }
        };
        echoes.extend(std::iter::repeat_n(e, c.n));
    }
    finish_request(st, Kind::Completion, jobs, c, echoes).await
}

pub async fn chat(State(st): St, headers: HeaderMap, body: Body) -> Response {
    match chat_inner(&st, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(st: &Arc<AppState>, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let m = request_body(st, headers, body).await?;
    check_model(st, &m)?;
    refuse_unsupported(&m, true)?;
    let c = Common::parse(&m, true)?;
    let messages = parse_messages(&m)?;
    check_choices(st, 1, c.n)?;
    check_text_bytes(
        st,
        "messages",
        messages.iter().map(|m| m.content.len()).sum(),
    )?;
    let st2 = st.clone();
    let ids = off_thread(&st.tokenize_gate, move || {
        let enc = ChatEncoder {
            tokenizer: &st2.tokenizer,
            text_tokenizer: &st2.text_tokenizer,
            template: &st2.template,
        };
        encode_chat(&enc, &messages)
    })
    .await?;
    let jobs = (0..c.n)
        .map(|j| make_job(st, &c, ids.clone(), None, st.template.stop_strings(), j))
        .collect::<ApiResult<Vec<_>>>()?;
    let echoes = vec![Echo::default(); jobs.len()];
    finish_request(st, Kind::Chat, jobs, c, echoes).await
}

async fn finish_request(
    st: &Arc<AppState>,
    kind: Kind,
    jobs: Vec<Job>,
    c: Common,
    echoes: Vec<Echo>,
) -> ApiResult<Response> {
    let n = jobs.len();
    let rx = submit(st, jobs)?;
    let meta = Meta {
        kind,
        id: next_id(if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }),
        created: now(),
        model: st.model_name.clone(),
        tokenizer: st.tokenizer.clone(),
        logprobs: c.logprobs.is_some(),
    };
    if c.stream {
        return Ok(sse(rx, n, meta, c.include_usage, echoes));
    }
    collect(rx, n, meta, echoes).await
}

struct Meta {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    tokenizer: Arc<Tokenizer>,
    /// Whether choices carry log-probabilities.
    logprobs: bool,
}

/// A choice's log-probabilities as they accumulate.
struct ChoiceLogprobs {
    completion: CompletionLogprobs,
    chat: Vec<TokenLogprob>,
}

impl ChoiceLogprobs {
    fn new(meta: &Meta, echo: &Echo) -> Self {
        let mut completion = CompletionLogprobs::new(0);
        if let Some((first, lps)) = &echo.scored {
            completion.push_first(&meta.tokenizer, *first);
            for lp in lps {
                completion.push(&meta.tokenizer, lp);
            }
        }
        ChoiceLogprobs {
            completion,
            chat: vec![],
        }
    }

    fn add(&mut self, meta: &Meta, lps: Vec<TokenLogprob>) {
        match meta.kind {
            Kind::Completion => lps
                .iter()
                .for_each(|lp| self.completion.push(&meta.tokenizer, lp)),
            Kind::Chat => self.chat.extend(lps),
        }
    }

    /// The JSON of what has accumulated since the last call (`null` when not asked for).
    fn take(&mut self, meta: &Meta) -> Value {
        if !meta.logprobs {
            return Value::Null;
        }
        match meta.kind {
            Kind::Completion => self.completion.take(),
            Kind::Chat => chat_logprobs(&meta.tokenizer, &std::mem::take(&mut self.chat)),
        }
    }
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }
    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
    fn choice_delta(
        &self,
        index: usize,
        text: &str,
        finish: Option<&str>,
        first: bool,
        logprobs: Value,
    ) -> Value {
        match self.kind {
            Kind::Completion => {
                json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish})
            }
            Kind::Chat => {
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else if first {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }
}

fn usage_json(u: &[Usage]) -> Value {
    let p: usize = u.iter().map(|x| x.prompt).sum();
    let c: usize = u.iter().map(|x| x.completion).sum();
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

async fn collect(
    mut rx: UnboundedReceiver<Msg>,
    n: usize,
    meta: Meta,
    echoes: Vec<Echo>,
) -> ApiResult<Response> {
    let mut lps: Vec<ChoiceLogprobs> = echoes
        .iter()
        .map(|e| ChoiceLogprobs::new(&meta, e))
        .collect();
    let mut texts: Vec<String> = echoes.into_iter().map(|e| e.text).collect();
    let mut usage = vec![Usage::default(); n];
    let mut left = n;
    while left > 0 {
        match rx.recv().await {
            Some(Msg::Text(i, t)) => texts[i].push_str(&t),
            Some(Msg::Logprobs(i, l)) => lps[i].add(&meta, l),
            Some(Msg::Done(i, u)) => {
                usage[i] = u;
                left -= 1;
            }
            Some(Msg::Error(i, e)) => {
                return Err(ApiError::internal(format!(
                    "generation failed (choice {i}): {e}"
                )))
            }
            None => return Err(ApiError::internal("the decoding thread stopped")),
        }
    }
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            let logprobs = lps[i].take(&meta);
            match meta.kind {
                Kind::Completion => json!({"index": i, "text": texts[i], "logprobs": logprobs, "finish_reason": usage[i].finish}),
                Kind::Chat => json!({
                    "index": i,
                    "message": {"role": "assistant", "content": texts[i]},
                    "logprobs": logprobs,
                    "finish_reason": usage[i].finish,
                }),
            }
        })
        .collect();
    let mut v = meta.envelope(false, Value::Array(choices));
    v["usage"] = usage_json(&usage);
    Ok(json_response(v))
}

fn sse_event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

struct Stream {
    rx: UnboundedReceiver<Msg>,
    meta: Meta,
    left: usize,
    started: Vec<bool>,
    usage: Vec<Usage>,
    lps: Vec<ChoiceLogprobs>,
    include_usage: bool,
    out: VecDeque<Bytes>,
    ended: bool,
}

impl Stream {
    fn chunk(&mut self, index: usize, text: &str, finish: Option<&str>) {
        let first = !self.started[index];
        self.started[index] = true;
        let lp = self.lps[index].take(&self.meta);
        let c = self.meta.choice_delta(index, text, finish, first, lp);
        let v = self.meta.envelope(true, json!([c]));
        self.out.push_back(sse_event(&v));
    }

    fn on(&mut self, m: Option<Msg>) {
        match m {
            Some(Msg::Text(i, t)) => self.chunk(i, &t, None),
            Some(Msg::Logprobs(i, l)) => self.lps[i].add(&self.meta, l),
            Some(Msg::Done(i, u)) => {
                if self.meta.kind == Kind::Chat && !self.started[i] {
                    self.chunk(i, "", None);
                }
                self.chunk(i, "", Some(u.finish));
                self.usage[i] = u;
                self.left -= 1;
                if self.left == 0 {
                    if self.include_usage {
                        let mut v = self.meta.envelope(true, json!([]));
                        v["usage"] = usage_json(&self.usage);
                        self.out.push_back(sse_event(&v));
                    }
                    self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                    self.ended = true;
                }
            }
            Some(Msg::Error(i, e)) => {
                let err = ApiError::internal(format!("generation failed (choice {i}): {e}"));
                self.out.push_back(sse_event(&err.body()));
                self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                self.ended = true;
            }
            None => self.ended = true,
        }
    }
}

fn sse(
    rx: UnboundedReceiver<Msg>,
    n: usize,
    meta: Meta,
    include_usage: bool,
    echoes: Vec<Echo>,
) -> Response {
    let lps = echoes
        .iter()
        .map(|e| ChoiceLogprobs::new(&meta, e))
        .collect();
    let mut s = Stream {
        rx,
        meta,
        left: n,
        started: vec![false; n],
        usage: vec![Usage::default(); n],
        lps,
        include_usage,
        out: VecDeque::new(),
        ended: false,
    };
    for (i, e) in echoes.iter().enumerate() {
        if !e.text.is_empty() {
            s.chunk(i, &e.text, None);
        }
    }
    // When the client disconnects the body stream is dropped with `rx`, and the sinks see
    // the closed channel at their next token.
    let body = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(b) = s.out.pop_front() {
                return Some((Ok::<Bytes, Infallible>(b), s));
            }
            if s.ended {
                return None;
            }
            let m = s.rx.recv().await;
            s.on(m);
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| ApiError::internal("building the response").into_response())
}
