package wsapi

import (
	"net/http"
)

// AdminOnly wraps h, an administrative endpoint a program mounts next to
// Handler (changecast's configuration reload, say), so that it serves only
// requests authenticated as an admin: the token comes from the
// Authorization header or the login cookie, and its session is checked,
// as for the REST API. Other requests are answered 401 (no valid token) or
// 403 (a viewer's token) with a JSON {"error": ...} body, and h never sees
// them.
func (s *Server) AdminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, ok := s.authenticateHTTP(w, r)
		if !ok {
			return
		}
		if claims.Role != RoleAdmin {
			writeError(w, http.StatusForbidden, "this endpoint needs an admin token; mint one with changecast token --role admin")
			return
		}
		h.ServeHTTP(w, r)
	})
}
