package store

// SignedFingerprints returns how many fingerprints s has signed and keeps
// the signatures of (each costs one ed25519 signature per key).
func SignedFingerprints(s *Signer) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.done)
}
