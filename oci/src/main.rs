//! `boxsock-oci`: see the library's documentation.

fn main() {
    eprintln!("boxsock-oci: not built yet");
    std::process::exit(1);
}
