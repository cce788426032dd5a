//! The libkrun backend (work in progress).
