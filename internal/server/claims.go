package server

import (
	"context"
	"strings"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
)

// loginClaims are the profile claims of a login as they are stored: the
// identity provider wrote them, not the caller, and a refused login locks
// a person out, so a malformed optional claim is dropped (stored empty)
// rather than failing the login, and an overlong name is cut. dropped
// names what was dropped or cut, never the values.
type loginClaims struct {
	name, email, photoURL string
	preferredUsername     *string
	dropped               []string
}

// maxPreferredUsername bounds the preferred_username claim sent to the
// database, which derives a username of at most 32 characters from it.
const maxPreferredUsername = 256

func sanitizeClaims(req *usersv1.ResolveOrCreateUserRequest) loginClaims {
	c := loginClaims{name: req.GetName(), email: req.GetEmail(), photoURL: req.GetPhotoUrl()}
	var v violations // only to ask the validators; never returned
	if strings.IndexByte(c.name, 0) >= 0 {
		c.name = ""
		c.dropped = append(c.dropped, "name")
	} else if cut, ok := cutRunes(c.name, maxName); ok {
		c.name = cut
		c.dropped = append(c.dropped, "name")
	}
	if v.email("email", c.email); v.count() > 0 {
		c.email, v = "", violations{}
		c.dropped = append(c.dropped, "email")
	}
	if v.photoURL("photo_url", c.photoURL); v.count() > 0 {
		c.photoURL = ""
		c.dropped = append(c.dropped, "photo_url")
	}
	if req.PreferredUsername != nil {
		p := req.GetPreferredUsername()
		if strings.IndexByte(p, 0) >= 0 {
			c.dropped = append(c.dropped, "preferred_username")
		} else {
			p, _ = cutRunes(p, maxPreferredUsername)
			c.preferredUsername = &p
		}
	}
	return c
}

// cutRunes cuts s to its first n characters, reporting whether it did.
func cutRunes(s string, n int) (string, bool) {
	if len(s) <= n { // bytes ≥ characters
		return s, false
	}
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos], true
		}
		i++
	}
	return s, false
}

// noteDropped counts the dropped claims, one per claim, and logs their
// names (never their values) at info level: the login succeeded, but an
// operator should see an identity provider that sends malformed claims.
func (s *Server) noteDropped(ctx context.Context, dropped []string) {
	if len(dropped) == 0 {
		return
	}
	if s.droppedClaims != nil {
		for _, claim := range dropped {
			s.droppedClaims.WithLabelValues(claim).Inc()
		}
	}
	s.log.InfoContext(ctx, "login claims dropped", "grpc.method", "ResolveOrCreateUser", "dropped_claims", strings.Join(dropped, ","))
}
