"""Operations on plain values (strings, numbers, JSON) that text and logic nodes wrap. Stdlib only."""
