//! tokio-tungstenite echo server on a current-thread runtime: the crate's own echo example
//! (`read.try_filter(text or binary).forward(write)`, which batches sends and flushes when the
//! stream has nothing more ready), with TCP_NODELAY as wsloop sets it.
//!
//! `tt_echo [--addr 127.0.0.1:9002]`

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let addr = wsloop_bench_peers_addr("127.0.0.1:9002");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!("tokio-tungstenite echo listening on {addr}");
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}

fn wsloop_bench_peers_addr(default: &str) -> String {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => default.to_string(),
        (Some("--addr"), Some(a)) => a,
        _ => {
            eprintln!("usage: tt_echo [--addr HOST:PORT]");
            std::process::exit(2);
        }
    }
}
