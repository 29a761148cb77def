//! The OpenAI-compatible HTTP client.
