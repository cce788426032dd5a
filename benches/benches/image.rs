//! Criterion bench of issue 20's pull: `ImageStore::pull` of a ~100 MB image from a
//! local registry into a fresh store (download, verify every blob, unpack every layer),
//! timed interleaved with its floor from the same run: `skopeo copy` of the same image
//! to an OCI layout, then `umoci unpack --rootless` of it (what the field's tools pay
//! for the same download and unpack).
//!
//! The registry is Debian's `docker-registry` on 127.0.0.1:<free port>, started, and
//! filled with `skopeo copy`, by the image store's own test harness
//! (`core/image/tests/registry`), and the image is built by its test corpus
//! (`core/image/tests/corpus`): four gzip layers of deterministic, incompressible data.
//! In criterion's test mode (no `--bench`) the image is ~4 MB, each side runs once, and
//! a missing `docker-registry`, `skopeo` or `umoci` is a skip (a failure under
//! `CI=true`: `.ci/run` installs them).

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

#[path = "../../core/image/tests/corpus/mod.rs"]
mod corpus;
#[path = "../../core/image/tests/registry/mod.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use boxsock_benches::{paired, run};
use boxsock_image::{ImageStore, PullOptions};
use corpus::{Layer, Tar};
use criterion::{Criterion, SamplingMode, criterion_group};
use registry::{Auth, Registry, have};

/// Layers of the image.
const LAYERS: usize = 4;

/// Files per layer, and bytes per file: 4 × 25 × 1 MiB measuring, 4 × 4 × 256 KiB in
/// test mode.
fn shape() -> (usize, usize, &'static str) {
    if run::measuring() { (25, 1 << 20, "100MB") } else { (4, 256 << 10, "4MB") }
}

/// Deterministic bytes that gzip cannot shrink (splitmix64 from `seed`).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The image's layers: `LAYERS` gzip layers of `files` files of `size` bytes.
fn layers(files: usize, size: usize) -> Vec<Layer> {
    (0..LAYERS)
        .map(|l| {
            let mut t = Tar::new();
            t.dir("data").dir(format!("data/l{l}"));
            for f in 0..files {
                let seed = (l * 1000 + f) as u64;
                t.file(format!("data/l{l}/f{f:03}"), &noise(seed, size));
            }
            Layer::gzip(t.finish())
        })
        .collect()
}

/// Remove `dir` if present; stores and bundles hold read-only directories (the store's
/// layers are 0555), so make them writable first when a plain removal is refused.
fn remove_tree(dir: &Path) {
    if !dir.exists() || std::fs::remove_dir_all(dir).is_ok() {
        return;
    }
    let st = Command::new("chmod").arg("-R").arg("u+rwx").arg(dir).status().expect("chmod");
    assert!(st.success(), "chmod -R u+rwx {}", dir.display());
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
}

fn bench_image(c: &mut Criterion) {
    if !(have("docker-registry", "docker-registry", "docker-registry")
        && have("skopeo", "skopeo", "skopeo")
        && have("umoci", "umoci", "umoci"))
    {
        return;
    }
    let (files, size, param) = shape();
    let tmp = tempfile::Builder::new().prefix("bsimg").tempdir_in("/tmp").expect("tempdir");
    let reg = Registry::start(Auth::None);
    let layers = layers(files, size);
    let blob_bytes: u64 = layers.iter().map(|l| l.blob.len() as u64).sum();
    let layout = tmp.path().join("layout");
    let mut l = corpus::Layout::new(&layout);
    let desc = l.image(&layers, corpus::host_arch(), serde_json::json!({"Cmd": ["/bin/sh"]}));
    l.tag(desc, "big");
    let repo = "bench/big:big";
    reg.push(&layout, "big", repo, false);
    let reference = reg.reference(repo);

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let opts = PullOptions {
        // No docker config of the machine's user leaks in.
        docker_config: Some(PathBuf::from("/nonexistent/config.json")),
        ..Default::default()
    };
    let (store, oci, bundle) =
        (tmp.path().join("store"), tmp.path().join("oci"), tmp.path().join("bundle"));
    // Every side starts from nothing: the previous call's output is removed, untimed.
    let mut setup = || {
        for d in [&store, &oci, &bundle] {
            remove_tree(d);
        }
    };
    let mut pull = || {
        let s = ImageStore::open(&store).expect("open the store");
        let r = tokio.block_on(s.pull(&reference, &opts)).expect("pull");
        // The whole image came over the wire and every layer was unpacked: a pull that
        // found anything already there would not be measuring a pull.
        assert!(r.bytes_downloaded() >= blob_bytes, "pulled {r:?}");
        assert_eq!(r.unpacked.len(), LAYERS, "unpacked {:?}", r.unpacked);
    };
    let src = format!("docker://{reference}");
    let dest = format!("oci:{}:big", oci.display());
    let image = format!("{}:big", oci.display());
    let mut skopeo_umoci = || {
        let out = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"])
            .args([&src, &dest])
            .output()
            .expect("run skopeo");
        assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle)
            .output()
            .expect("run umoci");
        assert!(out.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&out.stderr));
        assert!(bundle.join("rootfs/data/l0").is_dir(), "umoci unpacked no layer");
    };

    let mut g = c.benchmark_group("image");
    // Seconds per call: flat sampling (one iteration per sample), not criterion's linear
    // ramp, which would take 55 calls of each side.
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(30));
    g.warm_up_time(Duration::from_secs(1));
    paired(
        &mut g,
        "image",
        "pull-unpack",
        param,
        &mut setup,
        &mut pull,
        &mut [("floor-skopeo-copy-umoci-unpack", &mut skopeo_umoci)],
    );
    g.finish();
    drop(reg);
}

criterion_group!(benches, bench_image);
// Not `criterion_main!`: a measuring run records its manifest, test mode nothing.
fn main() {
    boxsock_benches::run::main("image", &[benches]);
}
