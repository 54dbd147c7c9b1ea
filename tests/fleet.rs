//! The scale benchmark in small (`benches/fleet.rs` is the whole one): 200 credentials, one
//! rotation each. It asserts the counts the benchmark reports, never times: one NetSapiens
//! request per token, one write of the Secret and one of the status for each new credential,
//! two Kubernetes writes per rotation (the Secret and the status; no Event with
//! `--routine-events=false`), and nothing at all while a restarted operator finds every token
//! fresh.

mod control_plane;
mod fixture;
mod measure;

use std::time::Duration;

use fixture::Fixture;
use nsapi_sim::SimConfig;

const FLEET: usize = 200;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_rotates_with_one_request_and_two_writes_and_a_restart_costs_nothing() {
    let plane = measure::audited_plane().await;
    // 180 s tokens rotate 45 to 90 s after they are issued: long after the restart below.
    let f = Fixture::new("fleet", SimConfig::new().token_ttl(secs(180))).await;
    f.create_input_secrets().await;
    fixture::grant_operator(&f, &[]).await;
    let operator = measure::start_operator(&f, &plane, "operator", false, &[]);
    let before_creation = measure::writes(&plane);
    measure::create_credentials(&f, 0..FLEET, 16).await;
    measure::wait_ready(&f, FLEET, secs(120)).await;
    // The status is written after the Secret and the Event: once every credential is Ready,
    // every write of their creation is in the audit log.
    tokio::time::sleep(secs(2)).await;
    let creation = measure::writes(&plane).since(&before_creation);
    eprintln!(
        "measure: creation of {FLEET}: {} Secret writes, {} status writes, {} Events, {} refused writes",
        creation.of("secrets"),
        creation.of("nsapicredentials/status"),
        creation.of("events"),
        creation.refused
    );
    assert_eq!(
        creation.of("secrets"),
        FLEET as u64,
        "one write per new Secret"
    );
    assert_eq!(
        creation.of("nsapicredentials/status"),
        FLEET as u64,
        "one status write per new credential"
    );
    assert_eq!(creation.of("events"), FLEET as u64, "one TokenIssued each");
    let issued = f.sim.stats();
    assert_eq!(
        issued.token_requests, FLEET as u64,
        "one request per new token"
    );
    assert_eq!(
        issued.read_requests, 0,
        "the grant said territory and uid: no inspection"
    );

    // A restart while every token is fresh: no request, no write. The restarted operator
    // records no Event for a routine rotation.
    let before = (f.sim.stats(), measure::writes(&plane));
    assert!(operator.stop(), "the operator did not stop");
    let operator =
        measure::start_operator(&f, &plane, "restarted", false, &["--routine-events=false"]);
    control_plane::eventually(
        "the restarted operator to look at every credential",
        secs(60),
        || async {
            let metrics = measure::operator_http(&operator, "/metrics").await?;
            let passes = measure::metric(&metrics, "nsapi_token_operator_reconciles_total")?;
            (passes >= FLEET as f64).then_some(())
        },
    )
    .await;
    tokio::time::sleep(secs(3)).await;
    let after = (f.sim.stats(), measure::writes(&plane));
    let restart_writes = after.1.since(&before.1);
    eprintln!(
        "measure: restart of a fleet of {FLEET} with fresh tokens: {} NetSapiens requests, {} Kubernetes writes",
        after.0.token_requests - before.0.token_requests,
        restart_writes.total()
    );
    assert_eq!(after.0.token_requests, before.0.token_requests);
    assert_eq!(restart_writes.total(), 0, "{restart_writes:?}");

    // One rotation of every credential.
    let passes = || async {
        let metrics = measure::operator_http(&operator, "/metrics").await.unwrap();
        measure::metric(&metrics, "nsapi_token_operator_reconciles_total").unwrap()
    };
    let passes_before = passes().await;
    let start = (f.sim.stats(), measure::writes(&plane));
    control_plane::eventually("every credential to rotate once", secs(180), || async {
        let rotated = measure::writes(&plane).since(&start.1).secrets_patched();
        (rotated >= FLEET).then_some(())
    })
    .await;
    // A rotation is one pass (its timer), and the operator's own writes start none: a watch
    // that re-listed on its own events would show here as a pass for every credential each time.
    let rotation_passes = passes().await - passes_before;
    eprintln!("measure: {rotation_passes} passes while {FLEET} credentials rotated once");
    assert!(
        rotation_passes <= 2.0 * FLEET as f64,
        "{rotation_passes} passes for {FLEET} rotations"
    );
    // Rotations go on (the first credentials start their second): stop the operator, which
    // finishes and writes what is in flight, so that the requests and the writes counted
    // below belong to the same rotations. Then let the last writes reach the audit log.
    assert!(operator.stop_within(secs(30)), "the operator did not stop");
    tokio::time::sleep(secs(2)).await;
    let end = (f.sim.stats(), measure::writes(&plane).since(&start.1));
    let rotations = end.1.secret_patches.len() as f64;
    let requests = (end.0.token_requests + end.0.read_requests
        - start.0.token_requests
        - start.0.read_requests) as f64;
    let core_writes = (end.1.of("secrets") + end.1.of("nsapicredentials/status")) as f64;
    eprintln!(
        "measure: {rotations} rotations: {:.2} NetSapiens requests and {:.2} writes (Secret + status) per rotation, {} Events, {} refused writes",
        requests / rotations,
        core_writes / rotations,
        end.1.of("events"),
        end.1.refused
    );
    assert_eq!(end.1.secrets_patched(), FLEET, "every credential rotated");
    assert_eq!(
        requests / rotations,
        1.0,
        "NetSapiens requests per rotation"
    );
    assert_eq!(
        core_writes / rotations,
        2.0,
        "Kubernetes writes per rotation"
    );
    assert_eq!(end.1.of("events"), 0, "an Event for a routine rotation");
    fixture::revoke_operator(&f).await;
}
