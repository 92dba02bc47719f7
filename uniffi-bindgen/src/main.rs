//! `cargo run -p uniffi-bindgen -- generate --library <lib> --language python --out-dir <dir>`:
//! the generator at exactly the library's UniFFI version.
fn main() {
    uniffi::uniffi_bindgen_main()
}
