//! `stepembed serve` end to end: a server on 127.0.0.1 port 0 with a committed fixture model,
//! spoken to over raw HTTP/1.1; every endpoint's result compared with [`Embedder`]'s own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use stepembed::server::{Server, ServerConfig};
use stepembed::Embedder;

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/minilm-l6-Q4_K_M.gguf")
}

fn config() -> ServerConfig {
    ServerConfig::new(model(), SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// An HTTP response's status and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The error object's `code`, after checking the OpenAI error shape.
    fn error_code(&self) -> String {
        let error = &self.json()["error"];
        assert!(error["message"].is_string() && error["type"].is_string(), "{}", self.body);
        assert!(error.get("param").is_some() && error.get("code").is_some(), "{}", self.body);
        error["code"].as_str().unwrap_or("").to_owned()
    }
}

/// One request on a fresh connection (`Connection: close`), with `headers` as "Name: value".
fn send(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413, 429) and close before the whole body is written.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Reply { status, body: if chunked { dechunk(body) } else { body.to_owned() } }
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    send(addr, "POST", path, &[], body.to_string().as_bytes())
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, "GET", path, &[], b"")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The largest difference between two vectors of the same length.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const TEXTS: [&str; 3] =
    ["Hello world", "The quick brown fox jumps over the lazy dog.", "stepembed streams weights"];

/// A text of about `words` words.
fn long_text(words: usize) -> String {
    (0..words).map(|i| format!("word{}", i % 97)).collect::<Vec<_>>().join(" ")
}

#[test]
fn openai_embeddings_equal_the_embedders() {
    let server = Server::start(config()).unwrap();
    let addr = server.addr();
    assert_ne!(addr.port(), 0);
    let mut embedder = Embedder::open(model()).unwrap();
    let expected: Vec<Vec<f32>> = TEXTS.iter().map(|t| embedder.embed(t).unwrap()).collect();

    let reply = post(addr, "/v1/embeddings", &json!({"input": TEXTS, "model": "anything"}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "anything");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), TEXTS.len());
    let mut tokens = 0;
    for (i, (item, want)) in data.iter().zip(&expected).enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        assert!(max_diff(&floats(&item["embedding"]), want) <= 1e-6, "text {i}");
        tokens += embedder.tokenize(TEXTS[i]).unwrap().len();
    }
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);

    // A single string, base64: the little-endian f32 bytes of the same vector.
    let reply = post(addr, "/v1/embeddings", &json!({"input": TEXTS[1], "encoding_format": "base64"}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let encoded = reply.json()["data"][0]["embedding"].as_str().unwrap().to_owned();
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let decoded: Vec<f32> =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert!(max_diff(&decoded, &expected[1]) <= 1e-6);

    // Matryoshka: the first 64 floats, scaled back to unit length.
    let reply = post(addr, "/v1/embeddings", &json!({"input": TEXTS[0], "dimensions": 64}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let cut = floats(&reply.json()["data"][0]["embedding"]);
    let norm = expected[0][..64].iter().map(|x| x * x).sum::<f32>().sqrt();
    let want: Vec<f32> = expected[0][..64].iter().map(|x| x / norm).collect();
    assert!(max_diff(&cut, &want) <= 1e-6);
    let dims = embedder.embedding_len();
    let reply = post(addr, "/v1/embeddings", &json!({"input": "x", "dimensions": dims + 1}));
    assert_eq!((reply.status, reply.error_code()), (400, String::new()), "{}", reply.body);
    assert_eq!(reply.json()["error"]["param"], "dimensions");
    server.shutdown().unwrap();
}

#[test]
fn tei_ollama_tokenize_models_health_and_metrics() {
    let server = Server::start(config()).unwrap();
    let addr = server.addr();
    let mut embedder = Embedder::open(model()).unwrap();
    let expected: Vec<Vec<f32>> = TEXTS.iter().map(|t| embedder.embed(t).unwrap()).collect();

    let reply = post(addr, "/embed", &json!({"inputs": TEXTS}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let vectors = reply.json();
    for (got, want) in vectors.as_array().unwrap().iter().zip(&expected) {
        assert!(max_diff(&floats(got), want) <= 1e-6);
    }
    let reply = post(addr, "/embed", &json!({"inputs": TEXTS[0], "normalize": false}));
    let raw = floats(&reply.json()[0]);
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "an unnormalized vector has norm {norm}");
    let scaled: Vec<f32> = raw.iter().map(|x| x / norm).collect();
    assert!(max_diff(&scaled, &expected[0]) <= 1e-6);
    // text-embeddings-inference refuses a text over the context unless told to truncate.
    let long = long_text(1000);
    assert_eq!(post(addr, "/embed", &json!({"inputs": long})).error_code(), "context_length_exceeded");
    assert_eq!(post(addr, "/embed", &json!({"inputs": long})).status, 413);
    assert_eq!(post(addr, "/embed", &json!({"inputs": long, "truncate": true})).status, 200);
    assert_eq!(post(addr, "/v1/embeddings", &json!({"input": long})).status, 400);

    let reply = post(addr, "/api/embed", &json!({"model": "all-minilm", "input": [TEXTS[0], TEXTS[2]]}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["model"], "all-minilm");
    let embeddings = body["embeddings"].as_array().unwrap();
    assert!(max_diff(&floats(&embeddings[0]), &expected[0]) <= 1e-6);
    assert!(max_diff(&floats(&embeddings[1]), &expected[2]) <= 1e-6);
    let reply = post(addr, "/api/embed", &json!({"model": "m", "input": TEXTS[1]}));
    assert!(max_diff(&floats(&reply.json()["embeddings"][0]), &expected[1]) <= 1e-6);

    let ids: Vec<u32> = embedder.tokenize(TEXTS[1]).unwrap();
    let reply = post(addr, "/tokenize", &json!({"content": TEXTS[1]}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["tokens"], json!(ids));
    let reply = post(addr, "/tokenize", &json!({"input": [TEXTS[1], TEXTS[0]]}));
    let ids0 = embedder.tokenize(TEXTS[0]).unwrap();
    assert_eq!(reply.json()["tokens"], json!([ids, ids0]));

    // Token ids as OpenAI input, one array or several, embed exactly like their texts.
    let vector = |reply: &Reply, i: usize| floats(&reply.json()["data"][i]["embedding"]);
    let reply = post(addr, "/v1/embeddings", &json!({"input": ids}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(max_diff(&vector(&reply, 0), &expected[1]) <= 1e-6);
    assert_eq!(reply.json()["usage"]["prompt_tokens"], json!(ids.len()));
    let reply = post(addr, "/v1/embeddings", &json!({"input": [ids, ids0]}));
    assert!(max_diff(&vector(&reply, 0), &expected[1]) <= 1e-6);
    assert!(max_diff(&vector(&reply, 1), &expected[0]) <= 1e-6);
    // An id outside the vocab, or more ids than the context, is the caller's error.
    let reply = post(addr, "/v1/embeddings", &json!({"input": [101, 999_999, 102]}));
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = post(addr, "/v1/embeddings", &json!({"input": vec![1000u32; 600]}));
    assert_eq!(reply.status, 400, "{}", reply.body);

    let reply = get(addr, "/v1/models");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["data"][0]["id"], "minilm-l6-Q4_K_M");
    let reply = get(addr, "/health");
    assert_eq!((reply.status, reply.json()["status"].clone()), (200, json!("ok")));
    assert_eq!(get(addr, "/nope").error_code(), "not_found");

    let reply = get(addr, "/metrics");
    assert_eq!(reply.status, 200);
    let metric = |name: &str| -> f64 {
        let line = reply.body.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(metric("stepembed_requests_total{endpoint=\"/embed\",status=\"200\"}"), 3.0);
    assert_eq!(metric("stepembed_requests_total{endpoint=\"/embed\",status=\"413\"}"), 2.0);
    assert_eq!(metric("stepembed_queue_depth"), 0.0);
    assert_eq!(metric("stepembed_arena_bytes"), embedder.memory_bytes() as f64);
    assert!(metric("stepembed_tokens_total") > 0.0);
    assert_eq!(metric("stepembed_request_duration_seconds_count"), 17.0);
    assert_eq!(metric("stepembed_request_duration_seconds_bucket{le=\"+Inf\"}"), 17.0);
    server.shutdown().unwrap();
}

#[test]
fn bad_requests_get_openai_errors() {
    let server = Server::start(ServerConfig { max_body_bytes: 4096, ..config() }).unwrap();
    let addr = server.addr();
    let bad = |body: &[u8]| send(addr, "POST", "/v1/embeddings", &[], body);
    let reply = bad(b"{\"input\": ");
    assert_eq!((reply.status, reply.error_code()), (400, "invalid_json".into()));
    assert_eq!(bad(b"[1, 2]").status, 400);
    for body in [
        json!({}),
        json!({"input": 3}),
        json!({"input": [["a"]]}),
        json!({"input": ["a", 1]}),
        json!({"input": []}),
        json!({"input": ""}),
        json!({"input": "a", "encoding_format": "int8"}),
        json!({"input": "a", "dimensions": 0}),
        json!({"input": "a", "dimensions": "8"}),
        json!({"input": "a", "model": 1}),
    ] {
        let reply = post(addr, "/v1/embeddings", &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(post(addr, "/v1/embeddings", &json!({"input": [[]]})).status, 400);
    assert_eq!(post(addr, "/embed", &json!({"inputs": "a", "normalize": "yes"})).status, 400);
    assert_eq!(post(addr, "/tokenize", &json!({"text": "a"})).status, 400);
    let reply = post(addr, "/v1/embeddings", &json!({"input": long_text(2000)}));
    assert_eq!((reply.status, reply.error_code()), (413, "body_too_large".into()));
    server.shutdown().unwrap();
}

#[test]
fn api_key_is_required_except_for_health() {
    let key = "sk-test-123";
    let server = Server::start(ServerConfig { api_key: Some(key.into()), ..config() }).unwrap();
    let addr = server.addr();
    let body = json!({"input": "hi"}).to_string();
    for headers in [&[][..], &["Authorization: Bearer wrong"], &["Authorization: sk-test-123"]] {
        let reply = send(addr, "POST", "/v1/embeddings", headers, body.as_bytes());
        assert_eq!((reply.status, reply.error_code()), (401, "invalid_api_key".into()));
    }
    assert_eq!(get(addr, "/metrics").status, 401);
    assert_eq!(get(addr, "/v1/models").status, 401);
    assert_eq!(get(addr, "/health").status, 200);
    let auth = format!("Authorization: Bearer {key}");
    assert_eq!(send(addr, "POST", "/v1/embeddings", &[&auth], body.as_bytes()).status, 200);
    server.shutdown().unwrap();
}

/// Texts that keep the inference thread busy for a while.
fn slow_request() -> Value {
    json!({"input": vec![long_text(40); 4]})
}

/// Waits until `/metrics` shows `depth` requests queued or running.
fn wait_for_queue_depth(addr: SocketAddr, depth: usize) {
    let started = Instant::now();
    let line = format!("stepembed_queue_depth {depth}");
    while !get(addr, "/metrics").body.lines().any(|l| l == line) {
        assert!(started.elapsed() < Duration::from_secs(60), "queue depth never reached {depth}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_full_queue_is_429_and_shutdown_finishes_work_in_flight() {
    let server = Server::start(ServerConfig { max_queue: 1, ..config() }).unwrap();
    let addr = server.addr();
    let slow = std::thread::spawn(move || post(addr, "/v1/embeddings", &slow_request()));
    wait_for_queue_depth(addr, 1);
    let reply = post(addr, "/v1/embeddings", &json!({"input": "one more"}));
    assert_eq!((reply.status, reply.error_code()), (429, "queue_full".into()));
    // Shutting down now still answers the request in flight.
    server.shutdown().unwrap();
    let reply = slow.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 4);
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn a_request_past_its_timeout_is_504() {
    let server =
        Server::start(ServerConfig { timeout: Some(Duration::from_millis(20)), ..config() }).unwrap();
    let reply = post(server.addr(), "/v1/embeddings", &slow_request());
    assert_eq!((reply.status, reply.error_code()), (504, "timeout".into()));
    server.shutdown().unwrap();
}

#[test]
fn concurrent_clients_each_get_their_own_results() {
    let server = Server::start(config()).unwrap();
    let addr = server.addr();
    let mut embedder = Embedder::open(model()).unwrap();
    let texts: Vec<String> = (0..8).map(|i| format!("client text number {i} {}", long_text(i * 7))).collect();
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| embedder.embed(t).unwrap()).collect();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (texts, expected) = (texts.clone(), expected.clone());
            std::thread::spawn(move || {
                for r in 0..4 {
                    let pick: Vec<usize> = (0..=(c + r) % 3).map(|k| (c + k + r) % texts.len()).collect();
                    let input: Vec<&str> = pick.iter().map(|&k| texts[k].as_str()).collect();
                    let reply = post(addr, "/v1/embeddings", &json!({ "input": input }));
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    let body = reply.json();
                    for (item, &k) in body["data"].as_array().unwrap().iter().zip(&pick) {
                        assert!(max_diff(&floats(&item["embedding"]), &expected[k]) <= 1e-6);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    server.shutdown().unwrap();
}
