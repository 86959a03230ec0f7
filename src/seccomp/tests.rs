use super::*;

#[test]
fn without_filters_spawn_starts_the_named_thread_itself() {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = spawn("spawn-test".into(), ThreadKind::VirtioRng, move || {
        let _ = tx.send(std::thread::current().name().map(String::from));
    })
    .unwrap();
    handle.join().unwrap();
    assert_eq!(rx.recv().unwrap().as_deref(), Some("spawn-test"));
}

#[test]
fn the_cli_spellings_map_to_the_modes() {
    use clap::ValueEnum;
    let parse = |s| Mode::from_str(s, false).unwrap();
    assert_eq!(parse("true"), Mode::Trap);
    assert_eq!(parse("false"), Mode::Off);
    assert_eq!(parse("log"), Mode::Log);
    assert!(Mode::from_str("on", false).is_err());
    assert_eq!(Mode::default(), Mode::Trap);
}
