//! The server under load and misuse, the socket file, `serve`'s main loop
//! (vmm.shutdown, guest poweroff, reboot, panic) and the client's parser.

use super::*;

#[test]
fn a_stalled_client_does_not_hold_up_others() {
    let limits = Limits {
        message: Duration::from_millis(300),
        ..Limits::default()
    };
    let rig = Rig::new("stall", limits);
    let staller = UnixStream::connect(&rig.sock).unwrap();
    (&staller)
        .write_all(b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pay")
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        rig.get("vmm.ping").status,
        200,
        "served while the other stalls"
    );
    assert!(started.elapsed() < Duration::from_millis(300));
    let resp = Conn::new(staller)
        .read_response(&Limits::default())
        .unwrap();
    assert_error(resp, 408, "did not arrive within 300ms");
    assert_error(rig.get("vm.info"), 404, "not created");
}

#[test]
fn a_flood_of_connections_is_refused_beyond_the_limit_and_then_served() {
    let rig = Rig::new("flood", Limits::default());
    let mut idle: Vec<UnixStream> = (0..Server::MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&rig.sock).unwrap())
        .collect();
    // The accept loop counts a connection when it accepts it; once it has
    // accepted all of the above, one more is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let resp = rig.get("vmm.ping");
        if resp.status == 503 || Instant::now() > deadline {
            break resp;
        }
    };
    assert_error(refused, 503, "too many API connections");
    idle.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.get("vmm.ping").status != 200 {
        assert!(Instant::now() < deadline, "the server never recovered");
    }
}

#[test]
fn the_socket_is_private_stale_ones_are_replaced_live_ones_refused() {
    let rig = Rig::new("socket", Limits::default());
    let mode = std::fs::metadata(&rig.sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (tx, _rx) = mpsc::channel();
    let api = || {
        let controller = Controller::new(Box::new(Fake(Default::default())), tx.clone());
        Arc::new(Api::new(controller, tx.clone()))
    };
    let live = Server::start(&rig.sock, api(), Limits::default());
    assert!(matches!(live, Err(ServerError::InUse(_))));

    let stale = rig.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let server = Server::start(&stale, api(), Limits::default()).unwrap();
    let resp = Rig::raw_at(&stale, b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n");
    assert_eq!(resp.status, 200);
    drop(server);
    assert!(!stale.exists(), "stopping removes the socket");

    let file = rig.dir.join("file");
    std::fs::write(&file, "").unwrap();
    let err = Server::start(&file, api(), Limits::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("is not a socket"), "{err}");
}

impl Rig {
    fn raw_at(sock: &Path, bytes: &[u8]) -> Response {
        let stream = UnixStream::connect(sock).unwrap();
        send_with_fds(&stream, bytes, &[]).unwrap();
        Conn::new(stream).read_response(&Limits::default()).unwrap()
    }
}

#[test]
fn the_guest_ending_reaches_the_main_loop_and_a_reboot_boots_again() {
    let rig = Rig::new("guest-exit", Limits::default());
    assert_eq!(rig.put("vm.create", Some(&rig.config(""))).status, 204);
    assert_eq!(rig.put("vm.boot", None).status, 204);
    let on_exit = rig.seen.lock().unwrap().on_exit.take().unwrap();
    on_exit(ExitReason::PowerOff);
    let event = rig.events.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        event,
        Event::VmExited {
            generation: 1,
            reason: ExitReason::PowerOff
        }
    );
}

/// `serve` with a fake backend: returns the status and what the backend saw.
fn serve_until(
    name: &str,
    steps: impl FnOnce(&Path, &Arc<Mutex<Seen>>, &Path),
) -> (i32, Arc<Mutex<Seen>>) {
    let dir = temp_dir(name);
    let sock = dir.join("api.sock");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let backend = Box::new(Fake(seen.clone()));
    let kernel = fake_bzimage(&format!("serve-{name}"));
    let config = VmConfig::from_json(&format!(
        r#"{{"payload": {{"kernel": {:?}}}}}"#,
        kernel.display().to_string()
    ))
    .unwrap();
    let (s2, k2) = (sock.clone(), kernel.clone());
    let thread = std::thread::spawn(move || serve(&s2, Some(config), backend, Limits::default()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "the server never listened");
        std::thread::yield_now();
    }
    steps(&sock, &seen, &k2);
    let status = thread.join().unwrap().unwrap();
    assert!(!sock.exists(), "the socket is removed at exit");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(kernel);
    (status, seen)
}

fn send(sock: &Path, endpoint: &'static str) -> Response {
    let call = Call {
        method: "PUT",
        endpoint,
        body: None,
        fds: Vec::new(),
    };
    client::send(sock, &call).unwrap()
}

#[test]
fn vmm_shutdown_tears_down_and_ends_with_0() {
    let (status, seen) = serve_until("vmm-shutdown", |sock, seen, _| {
        assert_eq!(
            seen.lock().unwrap().boots.len(),
            1,
            "the command line's VM booted"
        );
        assert_eq!(send(sock, "vmm.shutdown").status, 204);
    });
    assert_eq!(status, 0);
    assert_eq!(seen.lock().unwrap().shutdowns, 1);
}

#[test]
fn vmm_shutdown_while_paused_tears_down_and_ends_with_0() {
    let (status, seen) = serve_until("vmm-shutdown-paused", |sock, _, _| {
        assert_eq!(send(sock, "vm.pause").status, 204);
        assert_eq!(send(sock, "vmm.shutdown").status, 204);
    });
    assert_eq!(status, 0);
    let seen = seen.lock().unwrap();
    assert_eq!(
        (seen.actions.as_slice(), seen.shutdowns),
        (&["pause"][..], 1)
    );
}

#[test]
fn a_guest_reboot_boots_again_and_a_poweroff_ends_with_0() {
    let (status, seen) = serve_until("poweroff", |_, seen, _| {
        let take = || -> Box<dyn FnOnce(ExitReason) + Send> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(f) = seen.lock().unwrap().on_exit.take() {
                    return f;
                }
                assert!(Instant::now() < deadline, "no boot");
                std::thread::yield_now();
            }
        };
        take()(ExitReason::Reset);
        take()(ExitReason::PowerOff);
    });
    assert_eq!(status, 0);
    assert_eq!(seen.lock().unwrap().boots.len(), 2);
}

#[test]
fn a_guest_panic_ends_with_1() {
    let (status, _) = serve_until("panic", |_, seen, _| {
        let f = seen.lock().unwrap().on_exit.take().unwrap();
        f(ExitReason::GuestPanic);
    });
    assert_eq!(status, 1);
}

#[test]
fn the_client_parses_commands_like_ch_remote() {
    let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    let call = client::parse(&args("add-net tap=tap0,mac=02:00:00:00:00:01,fd=5,fd=6")).unwrap();
    assert_eq!(
        (call.method, call.endpoint, call.fds.as_slice()),
        ("PUT", "vm.add-net", &[5, 6][..])
    );
    let body: Value = serde_json::from_str(call.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"tap": "tap0", "mac": "02:00:00:00:00:01", "fds": [5, 6]})
    );
    let call = client::parse(&args("add-vsock cid=3,socket=/run/v.sock")).unwrap();
    assert_eq!(
        call.body.as_deref(),
        Some(r#"{"cid":3,"socket":"/run/v.sock"}"#)
    );
    let call = client::parse(&args("add-disk path=/d.img,readonly=on")).unwrap();
    assert_eq!(
        call.body.as_deref(),
        Some(r#"{"path":"/d.img","readonly":true}"#)
    );
    let call = client::parse(&args("remove-device gpu")).unwrap();
    assert_eq!(call.body.as_deref(), Some(r#"{"id":"gpu"}"#));
    assert_eq!(client::parse(&args("ping")).unwrap().method, "GET");
    for (bad, want) in [
        ("frob", "commands: ping"),
        ("boot now", "boot takes no argument"),
        ("add-device", "add-device needs an argument"),
        ("add-net fd=x", "bad value for fd"),
        ("add-disk path", "is not key=value"),
        ("create /nonexistent.json", "cannot read /nonexistent.json"),
    ] {
        let err = client::parse(&args(bad)).unwrap_err().to_string();
        assert!(err.contains(want), "{bad}: {err}");
    }
}
