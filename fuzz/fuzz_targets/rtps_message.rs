//! Fuzzes the RTPS parser, the SPDP decoder (with a builder round trip) and
//! the pcap reader. The body lives in the library so that `cargo test` runs
//! it over the committed corpus too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ros2_cni::rtps::fuzzing::check(data);
});
