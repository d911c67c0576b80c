//! Every code decoder on arbitrary text: no panic, and whatever decodes re-encodes to an equivalent code.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_core::codes::{self, CodeKind};
use tessera_core::offline::{SignedEmergency, SignedReceipt, SignedRequest, SignedResponse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for kind in CodeKind::ALL {
        if let Ok(bytes) = codes::decode(kind, text) {
            let again = codes::encode(kind, &bytes).expect("decoded data fits");
            assert_eq!(codes::decode(kind, &again).expect("re-encoded code decodes"), bytes);
        }
    }
    let _ = SignedRequest::decode(text);
    let _ = SignedResponse::decode(text);
    let _ = SignedReceipt::decode(text);
    let _ = SignedEmergency::decode(text);
});
