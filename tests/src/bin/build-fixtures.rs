//! Builds the named fixtures (as the tests would on first use) and prints each one's path, so
//! that `cargo xtask vmtest` can put them in a guest's initramfs before the tests run there.

fn main() {
    for name in std::env::args().skip(1) {
        println!("{}", autodump_tests::fixture_bin(&name).display());
    }
}
