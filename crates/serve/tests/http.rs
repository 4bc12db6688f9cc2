//! The server over real HTTP on 127.0.0.1 with a random model: every endpoint, streaming,
//! the 4xx cases, the API key, 50 concurrent clients whose greedy outputs equal
//! single-request generation, and 503 on a full queue. The crate's small HTTP/1.1 client keeps
//! the test dependencies small; every socket has a timeout.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tinyllama_engine::sampling::SamplingParams;
use tinyllama_infer::batch::SchedulerConfig;
use tinyllama_infer::generate::generate_text;
use tinyllama_infer::loader::{load, LoadOptions, Loaded};
use tinyllama_infer::testutil::{random_weights, small_config, write_model_dir};
use tinyllama_infer::{GenParams, WeightFormat};
use tinyllama_serve::client::{request, Reply};
use tinyllama_serve::conn::Limits;
use tinyllama_serve::{spawn, ServeOptions, ServerHandle};

const TEMPLATE: &str = r#"{"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"}"#;

fn model_dir(dir: &Path) {
    let w = random_weights(&small_config(256), 21, 3.0);
    write_model_dir(&w, dir, Some(TEMPLATE)).unwrap();
}

fn loaded(dir: &Path) -> Loaded {
    load(&LoadOptions {
        model: dir.to_path_buf(),
        tokenizer: None,
        format: WeightFormat::F32,
        draft: None,
        draft_format: None,
        draft_k: 4,
    })
    .unwrap()
}

fn start(dir: &Path, key: Option<&str>, max_parallel: usize, max_queue: usize) -> ServerHandle {
    let opts = ServeOptions {
        api_key: key.map(String::from),
        model_name: Some("tiny".into()),
        scheduler: SchedulerConfig {
            max_parallel,
            max_queue,
        },
        limits: Limits::default(),
        max_choices: None,
    };
    spawn(loaded(dir), "127.0.0.1:0".parse().unwrap(), &opts).unwrap()
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    request(addr, method, path, headers, body, Duration::from_secs(120)).unwrap()
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    http(addr, "POST", path, &[], Some(&body.to_string()))
}

/// What the runtime produces for this prompt alone (the server must match it).
fn single(l: &Loaded, prompt: &str, max_tokens: usize) -> String {
    let ids = l.tokenizer.encode_with_bos(prompt).unwrap();
    let p = GenParams {
        max_tokens,
        sampling: SamplingParams::greedy(),
        seed: 0,
        stop_ids: vec![l.tokenizer.eos_id],
    };
    generate_text(&l.runner, &l.tokenizer, &ids, p, &[], |_| true)
        .unwrap()
        .text
}

#[test]
fn endpoints_streaming_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    model_dir(tmp.path());
    let srv = start(tmp.path(), None, 4, 16);
    let a = srv.addr;

    let r = http(a, "GET", "/health", &[], None);
    assert_eq!(
        (r.status, r.json().unwrap()["status"].as_str()),
        (200, Some("ok"))
    );
    let r = http(a, "GET", "/v1/models", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["data"][0]["id"], "tiny");

    // Completions, greedy: equal to generating alone.
    let want = single(&loaded(tmp.path()), "hello world", 24);
    let r = post(
        a,
        "/v1/completions",
        &json!({"model": "tiny", "prompt": "hello world", "max_tokens": 24, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json().unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), want);
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    assert!(["stop", "length"].contains(&v["choices"][0]["finish_reason"].as_str().unwrap()));

    // Streaming completions: the chunks concatenate to the same text.
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "hello world", "max_tokens": 24, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        r.head
    );
    let ev = r.events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, want);
    assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 12);

    // Chat, plain and streamed, agree.
    let msgs = json!([{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]);
    let r = post(
        a,
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 20, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json().unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        a,
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 20, "temperature": 0, "stream": true}),
    );
    let ev = r.events();
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());

    // A stop string ends the text before it.
    if content.chars().count() > 6 {
        let stop: String = content.chars().skip(3).take(2).collect();
        let r = post(
            a,
            "/v1/chat/completions",
            &json!({"messages": msgs, "max_tokens": 20, "temperature": 0, "stop": [stop]}),
        );
        let v = r.json().unwrap();
        let got = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            content.starts_with(got) && !got.contains(&stop),
            "{got:?} / {content:?} / {stop:?}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    // Client mistakes: 4xx with an OpenAI error body, and the server keeps serving.
    let long = "ab ".repeat(200);
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("/v1/completions", "{not json", 400, "parse the JSON"),
        ("/v1/completions", "[1, 2]", 400, "JSON object"),
        (
            "/v1/completions",
            r#"{"prompt": "x", "max_tokens": "ten"}"#,
            400,
            "`max_tokens` must be an integer",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "temperature": "hot"}"#,
            400,
            "`temperature` must be a number",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "temperature": 7}"#,
            400,
            "between 0 and 2",
        ),
        (
            "/v1/completions",
            r#"{"prompt": 5}"#,
            400,
            "`prompt` must be",
        ),
        (
            "/v1/completions",
            r#"{"max_tokens": 5}"#,
            400,
            "`prompt` is required",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "max_tokens": 100000}"#,
            400,
            "maximum context length",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "max_tokens": 0}"#,
            400,
            "between 1",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "n": 3}"#,
            400,
            "at most 2 per request",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "stream": "yes"}"#,
            400,
            "`stream` must be true or false",
        ),
        (
            "/v1/completions",
            r#"{"prompt": [999999]}"#,
            400,
            "outside the vocabulary",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "model": "gpt-4"}"#,
            404,
            "does not exist",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": "hi"}"#,
            400,
            "`messages` must be an array",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": []}"#,
            400,
            "at least one",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user"}]}"#,
            400,
            "content",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "presence_penalty": 1}"#,
            400,
            "repetition_penalty",
        ),
        ("/v1/nope", "{}", 404, "Unknown request URL"),
    ];
    for (path, body, status, needle) in cases {
        let r = http(a, "POST", path, &[], Some(body));
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        let v = r.json().unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
        assert!(v["error"]["type"].is_string());
    }
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": long, "max_tokens": 5}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json().unwrap()["error"]["code"],
        "context_length_exceeded"
    );
    let r = http(a, "GET", "/v1/completions", &[], None);
    assert_eq!(r.status, 405);
    assert!(r.json().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not allowed"));
    // Still serving.
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "hello world", "max_tokens": 24, "temperature": 0}),
    );
    assert_eq!(
        r.json().unwrap()["choices"][0]["text"].as_str().unwrap(),
        want
    );
    srv.stop();
}

#[test]
fn api_key_is_required_when_set() {
    let tmp = tempfile::tempdir().unwrap();
    model_dir(tmp.path());
    let srv = start(tmp.path(), Some("sekrit"), 2, 4);
    let a = srv.addr;
    let body = json!({"prompt": "hi", "max_tokens": 3}).to_string();
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "sekrit")],
    ] {
        let r = http(a, "POST", "/v1/completions", &headers, Some(&body));
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.json().unwrap()["error"]["code"], "invalid_api_key");
    }
    assert_eq!(http(a, "GET", "/v1/models", &[], None).status, 401);
    let ok = [("Authorization", "Bearer sekrit")];
    assert_eq!(
        http(a, "POST", "/v1/completions", &ok, Some(&body)).status,
        200
    );
    assert_eq!(http(a, "GET", "/v1/models", &ok, None).status, 200);
    // Health checks need no key.
    assert_eq!(http(a, "GET", "/health", &[], None).status, 200);
}

#[test]
fn fifty_concurrent_clients_get_single_request_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    model_dir(tmp.path());
    let l = loaded(tmp.path());
    let prompts: Vec<String> = (0..50).map(|i| format!("prompt number {i} says")).collect();
    let lens: Vec<usize> = (0..50).map(|i| 8 + (i * 7) % 25).collect();
    let want: Vec<String> = prompts
        .iter()
        .zip(&lens)
        .map(|(p, &n)| single(&l, p, n))
        .collect();
    let srv = start(tmp.path(), None, 8, 64);
    let a = srv.addr;
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let (p, n) = (prompts[i].clone(), lens[i]);
            std::thread::spawn(move || {
                let stream = i % 3 == 0;
                let r = post(
                    a,
                    "/v1/completions",
                    &json!({"prompt": p, "max_tokens": n, "temperature": 0, "stream": stream}),
                );
                assert_eq!(r.status, 200, "{}", r.body);
                if stream {
                    r.events()
                        .iter()
                        .filter(|e| *e != "[DONE]")
                        .filter_map(|e| {
                            serde_json::from_str::<Value>(e).ok()?["choices"][0]["text"]
                                .as_str()
                                .map(String::from)
                        })
                        .collect::<String>()
                } else {
                    r.json().unwrap()["choices"][0]["text"]
                        .as_str()
                        .unwrap()
                        .to_string()
                }
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), want[i], "client {i}");
    }
    // Several prompts in one request come back as indexed choices.
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": [prompts[0], prompts[1]], "max_tokens": lens[0], "temperature": 0}),
    );
    let v = r.json().unwrap();
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), want[0]);
    assert_eq!(v["choices"][1]["index"], 1);
}

#[test]
fn a_full_queue_answers_503() {
    let tmp = tempfile::tempdir().unwrap();
    model_dir(tmp.path());
    let srv = start(tmp.path(), None, 1, 2);
    let a = srv.addr;
    // Nothing is admitted while paused, so two requests fill the queue deterministically.
    srv.scheduler.pause();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                post(
                    a,
                    "/v1/completions",
                    &json!({"prompt": "hi", "max_tokens": 4}),
                )
                .status
            })
        })
        .collect();
    let t0 = std::time::Instant::now();
    while srv.scheduler.load().1 < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "requests never queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 4}),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json().unwrap()["error"]["code"], "queue_full");
    assert!(r.head.to_ascii_lowercase().contains("retry-after"));
    srv.scheduler.resume();
    for w in waiting {
        assert_eq!(w.join().unwrap(), 200);
    }
    assert_eq!(
        post(
            a,
            "/v1/completions",
            &json!({"prompt": "hi", "max_tokens": 4})
        )
        .status,
        200
    );
}

#[test]
fn speculative_decoding_in_the_server_matches_the_target_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, d) = (tmp.path().join("m"), tmp.path().join("d"));
    model_dir(&m);
    let dw = random_weights(&small_config(256), 77, 3.0);
    write_model_dir(&dw, &d, Some(TEMPLATE)).unwrap();
    let plain = loaded(&m);
    let prompts: Vec<String> = (0..8).map(|i| format!("draft test {i}")).collect();
    let want: Vec<String> = prompts.iter().map(|p| single(&plain, p, 30)).collect();
    let with_draft = load(&LoadOptions {
        model: m.clone(),
        tokenizer: None,
        format: WeightFormat::F32,
        draft: Some(d),
        draft_format: None,
        draft_k: 3,
    })
    .unwrap();
    let opts = ServeOptions {
        api_key: None,
        model_name: None,
        scheduler: SchedulerConfig {
            max_parallel: 4,
            max_queue: 16,
        },
        limits: Limits::default(),
        max_choices: None,
    };
    let srv = spawn(with_draft, "127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let a = srv.addr;
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let p = p.clone();
            std::thread::spawn(move || {
                let r = post(
                    a,
                    "/v1/completions",
                    &json!({"prompt": p, "max_tokens": 30, "temperature": 0}),
                );
                r.json().unwrap()["choices"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    for (h, w) in handles.into_iter().zip(&want) {
        assert_eq!(&h.join().unwrap(), w);
    }
}
