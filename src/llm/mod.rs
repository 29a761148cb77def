//! The OpenAI-compatible HTTP client, shared by aspect generation and the server teacher.
//!
//! [`client`] sends JSON requests to one or more endpoints serving the same model, spreads them
//! by least-in-flight, and retries what can heal (timeouts, resets, 429, 5xx, bodies that are cut
//! off, not JSON, or lack the logprobs asked for) with exponential backoff and jitter, honouring
//! `Retry-After`. A 4xx that cannot heal (bad request, auth, unknown model) is an
//! [`crate::Error::Remote`] carrying the server's message; the API key (from `MAKD_API_KEY`, else
//! `OPENAI_API_KEY`) is sent as a bearer token and scrubbed from anything the client reports.
//!
//! [`logprobs`] reads the first answer token's top-k candidates from chat and completion
//! responses (OpenAI, vLLM, llama.cpp shapes). [`aspects_gen`] runs the paper's two-step aspect
//! generation (generate N questions, select Q) over the same client.

pub mod aspects_gen;
pub mod client;
pub mod logprobs;

pub use client::{Client, ClientOptions};
