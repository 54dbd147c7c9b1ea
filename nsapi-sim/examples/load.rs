//! A bounded load run against the simulator's token endpoint, loopback only: N requests over
//! C concurrent connections, then it prints the throughput and stops.
//!
//! ```text
//! cargo run --release -p nsapi-sim --example load -- -n 20000 -c 16
//! cargo run --release -p nsapi-sim --example load -- -n 20000 -c 16 --url http://127.0.0.1:8080/ns-api/
//! ```
//! Without `--url` it starts a simulator in-process (sharing the CPU with the load). With
//! `--url` it needs a simulator started with `--client load-client:load-secret
//! --subscriber load@sim:load-password`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use nsapi_sim::{Sim, SimConfig, Subscriber};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Grant {
    /// POST form password grants.
    Password,
    /// GET query-string refresh grants (one password grant first).
    Refresh,
}

#[derive(Parser, Debug)]
#[command(about = "Bounded load run against nsapi-sim's token endpoint (loopback only)")]
struct Args {
    /// Number of token requests.
    #[arg(short = 'n', long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
    /// Base URL of a running simulator on loopback; none starts one in-process.
    #[arg(long)]
    url: Option<String>,
    /// Which grant to send.
    #[arg(long, value_enum, default_value_t = Grant::Password)]
    grant: Grant,
}

const CLIENT: (&str, &str) = ("load-client", "load-secret");
const USER: (&str, &str) = ("load@sim", "load-password");

fn is_loopback(url: &str) -> bool {
    ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|p| url.starts_with(p))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (base, _sim) = match &args.url {
        Some(url) if is_loopback(url) => (format!("{}/", url.trim_end_matches('/')), None),
        Some(url) => return Err(format!("refusing a non-loopback URL: {url}").into()),
        None => {
            let sim = Sim::start(
                SimConfig::new()
                    .client(CLIENT.0, CLIENT.1)
                    .subscriber(Subscriber::new(USER.0, USER.1)),
            )
            .await?;
            (sim.base_url(), Some(sim))
        }
    };
    let url = format!("{base}oauth2/token/");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()?;
    let password: Vec<(&str, &str)> = vec![
        ("grant_type", "password"),
        ("client_id", CLIENT.0),
        ("client_secret", CLIENT.1),
        ("username", USER.0),
        ("password", USER.1),
    ];
    let refresh_token = match args.grant {
        Grant::Password => None,
        Grant::Refresh => {
            let t: serde_json::Value = http.post(&url).form(&password).send().await?.json().await?;
            Some(
                t["refresh_token"]
                    .as_str()
                    .ok_or("no refresh_token")?
                    .to_owned(),
            )
        }
    };

    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (http, url, next, ok) = (http.clone(), url.clone(), next.clone(), ok.clone());
        let (password, refresh_token) = (password.clone(), refresh_token.clone());
        let total = args.requests;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let sent = Instant::now();
                let req = match &refresh_token {
                    None => http.post(&url).form(&password),
                    Some(rt) => http.get(&url).query(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", CLIENT.0),
                        ("client_secret", CLIENT.1),
                        ("refresh_token", rt.as_str()),
                    ]),
                };
                if let Ok(res) = req.send().await
                    && res.status().is_success()
                    && res.bytes().await.is_ok()
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await?);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "{} {:?} requests, {} ok, {} failed, concurrency {}, {:.2} s: {:.0} requests/s \
         (latency p50 {:?}, p99 {:?}, max {:?})",
        args.requests,
        args.grant,
        ok,
        args.requests - ok,
        args.concurrency,
        elapsed.as_secs_f64(),
        args.requests as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    Ok(())
}
