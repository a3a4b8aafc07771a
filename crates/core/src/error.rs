//! Errors in the input a host gives the core (config, snapshot, delta).

use core::fmt;

/// Why a config, snapshot or delta was rejected. The engine keeps its previous state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputError {
    /// The bytes are not a valid protobuf message of the expected type.
    Decode,
    BadZone,
    BadTtl,
    BadPodMode,
    BadServiceType,
    BadProtocol,
    BadPort,
    /// An IP address that is neither 4 nor 16 bytes.
    BadAddress,
    /// A service or pod without namespace or name.
    MissingName,
    /// A service with more than 65,535 endpoint groups (EndpointSlices).
    TooManySlices,
    /// An unknown `truncation` mode.
    BadTruncation,
    /// An `nsid` longer than 128 bytes.
    BadNsid,
}

impl InputError {
    /// Stable negative code used across the wasm ABI (see docs/abi.md).
    pub fn code(self) -> i32 {
        match self {
            InputError::Decode => -2,
            InputError::BadZone => -3,
            InputError::BadTtl => -4,
            InputError::BadPodMode => -5,
            InputError::BadServiceType => -6,
            InputError::BadProtocol => -7,
            InputError::BadPort => -8,
            InputError::BadAddress => -9,
            InputError::MissingName => -10,
            InputError::TooManySlices => -11,
            InputError::BadTruncation => -12,
            InputError::BadNsid => -13,
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputError::Decode => "message does not decode as kdns.v1 protobuf",
            InputError::BadZone => "zone is not a valid domain name",
            InputError::BadTtl => "ttl must be between 0 and 3600",
            InputError::BadPodMode => "unknown pod mode",
            InputError::BadServiceType => "unknown service type",
            InputError::BadProtocol => "unknown port protocol",
            InputError::BadPort => "port number out of range",
            InputError::BadAddress => "IP address must be 4 or 16 bytes",
            InputError::MissingName => "object without namespace or name",
            InputError::TooManySlices => "service with more than 65535 endpoint groups",
            InputError::BadTruncation => "unknown truncation mode",
            InputError::BadNsid => "nsid longer than 128 bytes",
        })
    }
}

impl core::error::Error for InputError {}
