//! The wire contract of cutover: protobuf messages and gRPC services of the
//! `cutover.v1` package.
//!
//! The Rust code under `gen/` is generated from `cutover/v1/*.proto` and
//! committed, so an ordinary build needs no `protoc`. The test in
//! `tests/codegen.rs` regenerates it and fails when the committed copy is stale;
//! run it with `CUTOVER_REGENERATE=1` to rewrite the files.

/// Generated types and service stubs for `cutover.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    include!("gen/cutover.v1.rs");
}

/// Encoded `FileDescriptorSet` of the `cutover.v1` package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/cutover.v1.bin");

/// Fully qualified gRPC service names, for health reporting.
pub mod services {
    /// `cutover.v1.ProbeService`
    pub const PROBE: &str = "cutover.v1.ProbeService";
    /// `cutover.v1.AdminService`
    pub const ADMIN: &str = "cutover.v1.AdminService";
}

impl v1::Target {
    /// The short lowercase name used in configs, metrics and the CLI.
    pub fn label(self) -> &'static str {
        match self {
            v1::Target::Old => "old",
            v1::Target::New => "new",
            v1::Target::Dns => "dns",
            v1::Target::Unspecified => "unspecified",
        }
    }

    /// Parses `old`, `new` or `dns`.
    pub fn from_label(s: &str) -> Option<Self> {
        match s {
            "old" => Some(v1::Target::Old),
            "new" => Some(v1::Target::New),
            "dns" => Some(v1::Target::Dns),
            _ => None,
        }
    }
}

impl v1::FailureKind {
    /// The short lowercase name used as a metric label.
    pub fn label(self) -> &'static str {
        use v1::FailureKind as F;
        match self {
            F::Unspecified => "none",
            F::Timeout => "timeout",
            F::Dns => "dns",
            F::Connect => "connect",
            F::Tls => "tls",
            F::HttpStatus => "http_status",
            F::Body => "body",
            F::Header => "header",
            F::HashMismatch => "hash_mismatch",
            F::SizeMismatch => "size_mismatch",
            F::Missing => "missing",
            F::Protocol => "protocol",
            F::CertExpiring => "cert_expiring",
            F::UnexpectedAnswer => "unexpected_answer",
            F::Unsupported => "unsupported",
            F::Internal => "internal",
        }
    }
}

impl v1::AnswerClass {
    /// The short lowercase name used in metrics and the CLI.
    pub fn label(self) -> &'static str {
        match self {
            v1::AnswerClass::Old => "old",
            v1::AnswerClass::New => "new",
            v1::AnswerClass::Mixed => "mixed",
            v1::AnswerClass::Other => "other",
            v1::AnswerClass::Unspecified => "none",
        }
    }
}
