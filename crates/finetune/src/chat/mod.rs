//! Chat data for fine-tuning: reading conversations and preference pairs, rendering them with a
//! chat template into tokens with an assistant mask, and cutting them into training rows.
