//! Untrusted datagrams into `wire::open` and a real `Engine`, raw and sealed with the group key
//! (so foca's SWIM decoding and `Control::decode` are reached). Input format: `src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    consort_fuzz::Harness::run_input(data);
});
