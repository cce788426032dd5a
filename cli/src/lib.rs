//! boxsock library facade (work in progress).
