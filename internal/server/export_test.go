package server

import "time"

// QueuedReads returns how many point reads and logins wait to be coalesced.
func QueuedReads(s *Server) int {
	return s.byID.Queued() + s.bySubject.Queued() + s.logins.Queued()
}

// SetClock makes s expire API tokens, and check expires_at, by now.
func SetClock(s *Server, now func() time.Time) { s.now = now }
