package server

// QueuedReads returns how many point reads and logins wait to be coalesced.
func QueuedReads(s *Server) int {
	return s.byID.Queued() + s.bySubject.Queued() + s.logins.Queued()
}
