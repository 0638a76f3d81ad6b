//! The ceiling: a minimal hyper server that answers every request with the same 1 KB JSON-RPC
//! result, on the same runtime shape as the service (tokio's multi-threaded runtime, HTTP/1.1
//! keep-alive, one task per connection). It runs as a child process of the harness (the same
//! executable with `LOAD_ROLE=ceiling`), so its CPU and memory are measured like the service's.

use std::convert::Infallible;
use std::io::Write as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A JSON-RPC result of about 1 KB, shaped like a tool's.
fn body() -> Bytes {
    let text = "x".repeat(900);
    let value = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {
        "content": [{"type": "text", "text": text}], "isError": false}});
    Bytes::from(value.to_string())
}

/// Serves until killed; prints `listening on http://ADDR` first.
pub(crate) fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let mut out = std::io::stdout();
        writeln!(out, "listening on http://{addr}").expect("stdout");
        out.flush().expect("stdout");
        let body = body();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
