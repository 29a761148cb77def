//! The OpenAI-compatible HTTP client, shared by aspect generation ([`crate::aspects::generate`])
//! and the server teacher.
//!
//! [`client`] sends JSON requests to one or more endpoints serving the same model, spreads them
//! by least-in-flight, and retries what can heal (timeouts, resets, 429, 5xx, bodies that are cut
//! off, not JSON, or lack the logprobs asked for) with exponential backoff and jitter, honouring
//! `Retry-After`. A 4xx that cannot heal (bad request, auth, unknown model) is an
//! [`crate::Error::Remote`] carrying the server's message; API keys ([`client::ApiKeys`]:
//! `MAKD_API_KEY` to every endpoint, `OPENAI_API_KEY` over https only) are sent as bearer tokens
//! and scrubbed from anything the client reports.
//!
//! [`logprobs`] reads the first answer token's top-k candidates from chat and completion
//! responses (OpenAI, vLLM, llama.cpp shapes).

pub mod client;
pub mod logprobs;

pub use client::{Client, ClientOptions};
