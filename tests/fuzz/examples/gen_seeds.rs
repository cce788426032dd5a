//! Writes the committed seed inputs of every fuzz target into `<dir>/<target>/`.
//! Run through `scripts/fuzz.sh --regen-seeds`. Deterministic: the same build of the
//! core writes the same files, so a diff shows what changed.

use std::fs;
use std::path::Path;

use boxsock_core::BoxId;
use boxsock_core::proto::{ErrorCode, Frame, Request, Response, VERSION, WinSize, encode};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("create seed dir");
    fs::write(d.join(name), bytes).expect("write seed");
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(tag);
    f.extend_from_slice(body);
    f
}

fn main() {
    let dir = std::env::args_os().nth(1).expect("usage: gen_seeds <seeds dir>");
    let dir = Path::new(&dir);
    if dir.exists() {
        fs::remove_dir_all(dir).expect("clear old seeds");
    }

    // Box ids: valid ones at the edges, and one of each rejected shape.
    let max = "a".repeat(BoxId::MAX_LEN);
    let over = "a".repeat(BoxId::MAX_LEN + 1);
    let ids: &[(&str, &[u8])] = &[
        ("valid-short", b"abc"),
        ("valid-mixed", b"web-1.v2_x"),
        ("valid-generated", b"a1B2c3D4e5F6"),
        ("valid-max", max.as_bytes()),
        ("bad-too-long", over.as_bytes()),
        ("bad-empty", b""),
        ("bad-dot", b"."),
        ("bad-dotdot", b".."),
        ("bad-hidden", b".hidden"),
        ("bad-traversal", b"../etc"),
        ("bad-slash", b"a/b"),
        ("bad-nul", b"a\0b"),
        ("bad-space", b"a b"),
        ("bad-unicode", "héllo".as_bytes()),
        ("bad-non-utf8", b"ab\xff\xfe"),
        ("bad-char", b"a:b"),
    ];
    for (name, bytes) in ids {
        write(dir, "box_id", name, bytes);
    }

    // Socket file names: the catalogue's names, libkrun's derived names, bad shapes.
    let long = "s".repeat(49);
    let names: &[(&str, &str)] = &[
        ("agent", "agent.sock"),
        ("ready", "ready.sock"),
        ("net", "net.sock"),
        ("derived-suffix", "net.sock-krun.sock"),
        ("derived-sibling", "krun-net-4194304-4294967295.sock"),
        ("bad-hidden", ".x"),
        ("bad-dotdot", ".."),
        ("bad-slash", "a/b"),
        ("bad-space", "a b"),
        ("bad-too-long", &long),
    ];
    for (name, s) in names {
        write(dir, "socket_name", name, s.as_bytes());
    }

    // URIs.
    let uris: &[(&str, &str)] = &[
        ("unix", "unix:///tmp/boxsock-0/abc/agent.sock"),
        ("abstract", "abstract:boxsock-x"),
        ("bad-relative", "unix://relative"),
        ("bad-empty-abstract", "abstract:"),
        ("bad-scheme", "tcp://x"),
    ];
    for (name, s) in uris {
        write(dir, "address_uri", name, s.as_bytes());
    }

    // Store config rows: the current shape, a legacy row with socket-path fields (must
    // load), defaults omitted, and corrupt ones (wrong types, missing fields, bad JSON).
    let configs: &[(&str, &str)] = &[
        ("current", r#"{"strategy":"short-symlink","backend":"libkrun","network":true,"env":[["RUST_LOG","debug"]]}"#),
        ("legacy-paths", r#"{"strategy":"short-symlink","backend":"libkrun","transport":"unix","ready_socket_path":"/very/long/home/boxes/abc/sockets/ready.sock"}"#),
        ("defaults", r#"{"strategy":"direct","backend":"host"}"#),
        ("bad-missing-backend", r#"{"strategy":"direct"}"#),
        ("bad-type", r#"{"strategy":1,"backend":"host","network":"yes"}"#),
        ("bad-env-shape", r#"{"strategy":"direct","backend":"host","env":{"K":"V"}}"#),
        ("bad-json", r#"{"strategy":"#),
        ("bad-not-object", "[]"),
    ];
    for (name, s) in configs {
        write(dir, "store_config", name, s.as_bytes());
    }

    // Image documents. Manifests and indexes: the first byte picks the declared media
    // type (0: OCI manifest, 1: docker manifest, 2: OCI index, 3: docker list, 4: JSON,
    // 5: none); then an OCI manifest, a docker one, an index with platforms, and bad ones.
    let d64 = "a".repeat(64);
    let oci_manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{d64}","size":7}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{d64}","size":9}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:{d64}","size":9}}]}}"#
    );
    let docker_manifest = oci_manifest
        .replace("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
        .replace("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{d64}","size":5,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{d64}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    let manifests: &[(&str, u8, &str)] = &[
        ("oci-manifest", 0, &oci_manifest),
        ("docker-manifest", 1, &docker_manifest),
        ("oci-index", 2, &index),
        ("index-undeclared", 5, &index),
        ("manifest-as-json", 4, &oci_manifest),
        ("bad-declared-mismatch", 2, &oci_manifest),
        ("bad-artifact", 5, r#"{"schemaVersion":2,"mediaType":"application/vnd.example+json"}"#),
        ("bad-digest", 0, &oci_manifest.replace("sha256:aaaa", "sha256:../")),
        ("bad-schema", 0, &oci_manifest.replace(r#""schemaVersion":2"#, r#""schemaVersion":1"#)),
        ("bad-json", 5, "{\"manifests\":["),
    ];
    for (name, kind, body) in manifests {
        let mut bytes = vec![*kind];
        bytes.extend_from_slice(body.as_bytes());
        write(dir, "image_manifest", name, &bytes);
    }
    let image_configs: &[(&str, &str)] = &[
        ("full", r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/entry"],"Cmd":["--x"],"Env":["PATH=/bin","A=1"],"WorkingDir":"/srv","User":"app"},"rootfs":{"type":"layers","diff_ids":[]}}"#),
        ("no-config", r#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#),
        ("env-without-equals", r#"{"architecture":"amd64","os":"linux","config":{"Env":["FUZZ","FUZZ=2","PATH"]},"rootfs":{"type":"layers","diff_ids":[]}}"#),
        ("bad-type", r#"{"architecture":"amd64","os":"linux","config":{"Cmd":"sh"},"rootfs":{"type":"layers","diff_ids":[]}}"#),
        ("bad-json", r#"{"config":"#),
    ];
    for (name, s) in image_configs {
        write(dir, "image_config", name, s.as_bytes());
    }
    let references: &[(&str, &str)] = &[
        ("short", "alpine"),
        ("full", "registry.example:5000/team/app:1.2"),
        ("digest", "localhost/a@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("ipv6", "[::1]:5000/x/y:z"),
        ("bad-dotdot", "a/../b"),
        ("bad-upper", "Team/App"),
        ("bad-tag", "a:-x"),
    ];
    for (name, s) in references {
        write(dir, "image_reference", name, s.as_bytes());
    }

    // Agent protocol: every control message, every raw frame, a whole exec session,
    // and each kind of bad frame.
    let requests = [
        ("req-hello", Request::Hello { version: VERSION }),
        ("req-ping", Request::Ping {}),
        (
            "req-exec",
            Request::Exec {
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("K".into(), "V".into())],
                stdin: true,
                cwd: None,
                tty: false,
                winsize: None,
                user: None,
                rlimits: vec![],
            },
        ),
        (
            "req-exec-tty",
            Request::Exec {
                argv: vec!["sh".into()],
                env: vec![],
                stdin: true,
                cwd: Some("/tmp".into()),
                tty: true,
                winsize: Some(WinSize { rows: 24, cols: 80 }),
                user: None,
                rlimits: vec![],
            },
        ),
        ("req-signal", Request::Signal { signal: 2 }),
        ("req-resize", Request::Resize { rows: 50, cols: 132 }),
        ("req-shutdown", Request::Shutdown {}),
    ];
    for (name, r) in &requests {
        write(dir, "proto_decode", name, &encode(&Frame::Control(r.clone())));
    }
    let responses = [
        ("resp-hello", Response::Hello { version: VERSION, pid: 42 }),
        ("resp-ready", Response::Ready { version: VERSION, pid: 1 }),
        ("resp-pong", Response::Pong {}),
        ("resp-exit", Response::Exit { code: 137, signal: Some(9) }),
        ("resp-spawn-not-found", Response::Error { code: ErrorCode::NotFound, message: "cannot spawn \"nope\": No such file or directory".into() }),
        ("resp-shutting-down", Response::ShuttingDown {}),
        ("resp-error", Response::Error { code: ErrorCode::BadFrame, message: "frame length 0 is outside 1..=1048576".into() }),
    ];
    for (name, r) in &responses {
        write(dir, "proto_decode", name, &encode(&Frame::Control(r.clone())));
    }
    let raw: [(&str, Frame<Request>); 4] = [
        ("raw-stdout", Frame::Stdout(b"hello\n".to_vec())),
        ("raw-stderr", Frame::Stderr(b"oops\n".to_vec())),
        ("raw-stdin", Frame::Stdin(b"input".to_vec())),
        ("raw-stdin-eof", Frame::StdinEof),
    ];
    for (name, f) in &raw {
        write(dir, "proto_decode", name, &encode(f));
    }
    let mut session = Vec::new();
    session.extend(encode(&Frame::Control(Request::Hello { version: VERSION })));
    session.extend(encode(&Frame::Control(requests[2].1.clone())));
    session.extend(encode(&Frame::<Request>::Stdin(b"data".to_vec())));
    session.extend(encode(&Frame::<Request>::StdinEof));
    write(dir, "proto_decode", "stream-exec-session", &session);
    write(dir, "proto_decode", "bad-zero-length", &[0, 0, 0, 0]);
    write(dir, "proto_decode", "bad-over-max", &[0x00, 0x10, 0x00, 0x01, 1]);
    write(dir, "proto_decode", "bad-tag", &frame(9, b""));
    write(dir, "proto_decode", "bad-json", &frame(1, b"{\"type\":"));
    write(dir, "proto_decode", "bad-unknown-field", &frame(1, br#"{"type":"ping","bogus":1}"#));
    write(dir, "proto_decode", "bad-eof-with-body", &frame(5, b"x"));
    write(dir, "proto_decode", "truncated", &frame(1, br#"{"type":"ping"}"#)[..8]);
}
