//! Runs `examples/embedded_host.rs`, so the documented way of embedding the
//! core is checked, not only compiled.

#[path = "../examples/embedded_host.rs"]
mod embedded_host;

#[test]
fn the_embedding_example_enforces_the_policy_without_a_runtime() {
    let session = embedded_host::run_session();
    assert_eq!(
        session.to_server.len(),
        2,
        "tools/list and the allowed call: {:?}",
        session.to_server
    );
    assert!(session.to_server.iter().all(|l| !l.contains("delete_file")));
    assert_eq!(session.to_client.len(), 3);
    assert!(
        session.to_client[0].contains("read_file") && !session.to_client[0].contains("delete_file")
    );
    assert!(session
        .to_client
        .iter()
        .any(|l| l.contains("\"id\":3") && l.contains("-32001")));
    assert!(
        session
            .audit
            .iter()
            .any(|l| l.contains("SECURITY_BLOCK: delete_file")),
        "{:?}",
        session.audit
    );
}
