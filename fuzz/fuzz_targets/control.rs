//! `Control::decode` on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    consort_fuzz::run_control(data);
});
