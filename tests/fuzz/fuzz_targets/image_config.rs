//! The image store's config parser and docker's override rules on arbitrary bytes.
//!
//! Never a panic; an error has a bounded message; for an accepted config the run-time
//! process resolves (or says there is no command), and with overrides applied the argv
//! ends with the given command, the working directory and user are the given ones, and
//! every `-e` variable is in the environment with its value.
#![no_main]

use boxsock_image::config::{self, ImageConfig, Overrides};
use boxsock_image::manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = match manifest::parse_config(data) {
        Ok(c) => c,
        Err(e) => {
            assert!(e.to_string().len() < 8192);
            return;
        }
    };
    let image = ImageConfig::from_oci(&parsed);
    if let Ok(p) = config::resolve(&image, &Overrides::default()) {
        assert!(!p.argv.is_empty());
        assert!(p.env.iter().any(|e| e.starts_with("PATH=")));
    }
    let o = Overrides {
        entrypoint: None,
        cmd: vec!["run".into(), "it".into()],
        env: vec!["FUZZ=1".into(), "PATH=/fuzz".into()],
        working_dir: Some("/w".into()),
        user: Some("0:0".into()),
    };
    let p = config::resolve(&image, &o).expect("a command was given");
    assert!(p.argv.ends_with(&["run".to_owned(), "it".to_owned()]));
    assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/w", "0:0"));
    assert!(p.env.iter().any(|e| e == "FUZZ=1") && p.env.iter().any(|e| e == "PATH=/fuzz"));
    assert!(!p.env.iter().any(|e| e.starts_with("FUZZ=") && e != "FUZZ=1"));
});
