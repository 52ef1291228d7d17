//! A strict local stand-in for Leaf.
