//! What development and tests run beside the product: a `redis-server` (one,
//! or a cluster) and an `nx-27017` MongoDB-wire server started on free ports
//! in temporary directories, wiremock doubles of FCM and Gemini, and test
//! helpers. The local stack
//! (`chatctl stack`) and the test suites use it; no service links it.

#[cfg(feature = "google-fakes")]
pub mod fake_fcm;
#[cfg(feature = "google-fakes")]
pub mod fake_gemini;
#[cfg(feature = "google-fakes")]
pub mod google_api;
pub mod mongo_server;
pub mod redis_server;
pub mod testing;
