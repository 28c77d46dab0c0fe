//! `manager-operator echo-hook`: a tiny hook endpoint for local runs and demos. It answers 200
//! to every POST and logs one line per call (worker, fencing token, holder, object), so a
//! newcomer can see workers dispatching without deploying anything.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Args;

/// Arguments of `echo-hook`.
#[derive(Args, Debug)]
pub struct EchoHookArgs {
    /// Address to listen on (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:18099")]
    pub listen: SocketAddr,
}

async fn handle(body: Bytes) -> (StatusCode, &'static str) {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => {
            let obj = &v["object"]["metadata"];
            println!(
                "worker={} fencingToken={} holder={} object={}/{}",
                v["worker"].as_str().unwrap_or("?"),
                v["fencingToken"],
                v["holder"].as_str().unwrap_or("?"),
                obj["namespace"].as_str().unwrap_or(""),
                obj["name"].as_str().unwrap_or("?"),
            );
            (StatusCode::OK, "{}")
        }
        Err(e) => {
            println!("rejected a body that is not JSON: {e}");
            (StatusCode::BAD_REQUEST, "not JSON")
        }
    }
}

/// Serves until interrupted; returns an error message when it cannot.
pub async fn run(args: &EchoHookArgs) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("echo-hook listening on http://{}/", args.listen);
    let app = Router::new().fallback(post(handle));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("echo-hook failed: {e}"))
}
