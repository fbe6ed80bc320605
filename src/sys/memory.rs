//! Anonymous memory mappings (Argon2's working memory).
