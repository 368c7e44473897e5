// Package wire is changecast's v1 wire vocabulary: what the server
// (wsapi) and the Go client (wsapi/client) both speak, as docs/protocol.md
// describes it. It owns the endpoint paths, the subprotocol and bearer
// prefix, the frame namespaces and names, the request names, the control
// types, the shapes of control and error frames, and the encoder of
// entity-change frames, so a client re-emits exactly the server's bytes.
//
// It imports only the standard library, entities and internal/jsonenc
// (the JSON writer rows are made with), never the server, its
// JWT code or a WebSocket library, so a client program links none of them
// (a test in wsapi/client checks the client's imports). Everything here is
// protocol: changing a value changes what clients see, and
// docs/protocol.md with it.
package wire

// The HTTP paths and names of the v1 protocol.
const (
	// EventsPath is the WebSocket endpoint.
	EventsPath = "/api/v1/ws/events"
	// LoginPath is the login endpoint (GARM's path and body shape).
	LoginPath = "/api/v1/auth/login"
	// LogoutPath clears the login cookie.
	LogoutPath = "/api/v1/auth/logout"
	// CookieName is the HttpOnly cookie login sets, which browsers send
	// with the WebSocket upgrade and REST requests.
	CookieName = "changecast_token"
	// Subprotocol is the WebSocket subprotocol a browser offers, together
	// with BearerSubprotocolPrefix+"<jwt>", to authenticate without an
	// Authorization header. The server answers with Subprotocol.
	Subprotocol = "changecast.v1"
	// BearerSubprotocolPrefix prefixes the token in the subprotocol list.
	BearerSubprotocolPrefix = "bearer."
)
