package authz

import (
	"strings"
	"unicode/utf8"

	"github.com/cedar-policy/cedar-go/types"

	"github.com/warderhq/warder/internal/errkind"
)

// UID names an entity: a principal (User::"alice"), a resource
// (Account::"prod-pg/postgres") or a group (Group::"dba").
type UID struct {
	Type string // an entity type of the schema: "User", "Group", "Machine", "System", "Target", "Account", "Secret", "Role"
	ID   string
}

// The entity types of the schema.
const (
	TypeUser    = "User"
	TypeGroup   = "Group"
	TypeMachine = "Machine"
	TypeSystem  = "System"
	TypeTarget  = "Target"
	TypeAccount = "Account"
	TypeSecret  = "Secret"
	TypeRole    = "Role"
)

// SystemID is the ID of the one System entity, the server itself:
// System::"warder", the resource of the admin and audit_read actions.
const SystemID = "warder"

// SystemUID returns System::"warder".
func SystemUID() UID { return UID{Type: TypeSystem, ID: SystemID} }

// Limits on a UID, so that it fits in an audit event's fields.
const (
	maxTypeLen = 64
	maxIDLen   = 256
	maxUIDText = 4 * (maxTypeLen + maxIDLen) // the longest text ParseUID looks at
)

// String returns u in Cedar syntax, `User::"alice"`, with the ID escaped as
// in a Cedar string literal. ParseUID(u.String()) returns u for every UID
// that check accepts.
func (u UID) String() string { return u.cedar().String() }

func (u UID) cedar() types.EntityUID {
	return types.NewEntityUID(types.EntityType(u.Type), types.String(u.ID))
}

// ParseUID parses a UID in Cedar syntax: `User::"alice"`. The type is one
// identifier (the schema has no namespaces) and the ID a Cedar string
// literal, non-empty, at most 256 bytes once unescaped. Anything else is an
// errkind.Invalid error. ParseUID does not check the type against the
// schema; Check and Authorize do.
func ParseUID(s string) (UID, error) {
	if len(s) > maxUIDText {
		return UID{}, errkind.New(errkind.Invalid, "authz: entity %.32q... is too long", s)
	}
	if !utf8.ValidString(s) {
		return UID{}, errkind.New(errkind.Invalid, "authz: entity %q is not valid UTF-8", s)
	}
	typ, rest, ok := strings.Cut(s, "::")
	if !ok || !isIdent(typ) || !strings.HasPrefix(rest, `"`) {
		return UID{}, errkind.New(errkind.Invalid, `authz: entity %q is not of the form Type::"id"`, s)
	}
	var e types.EntityUID
	if err := e.UnmarshalCedar([]byte(s)); err != nil {
		return UID{}, errkind.New(errkind.Invalid, `authz: entity %q is not of the form Type::"id": %w`, s, err)
	}
	u := UID{Type: string(e.Type), ID: string(e.ID)}
	if err := u.check("entity"); err != nil {
		return UID{}, err
	}
	return u, nil
}

// check reports whether u, playing role ("principal", "resource",
// "entity"), is well formed: an identifier for a type and a non-empty ID of
// bounded length, in valid UTF-8 and without NUL (which neither audit events
// nor PostgreSQL TEXT can hold).
func (u UID) check(role string) error {
	switch {
	case !isIdent(u.Type) || len(u.Type) > maxTypeLen:
		return errkind.New(errkind.Invalid, "authz: %s type %q is not an identifier of at most %d bytes", role, clip(u.Type), maxTypeLen)
	case u.ID == "":
		return errkind.New(errkind.Invalid, "authz: %s %s has an empty ID", role, u.Type)
	case len(u.ID) > maxIDLen:
		return errkind.New(errkind.Invalid, "authz: %s ID is %d bytes, more than %d", role, len(u.ID), maxIDLen)
	case !utf8.ValidString(u.ID) || strings.IndexByte(u.ID, 0) >= 0:
		return errkind.New(errkind.Invalid, "authz: %s ID is not valid UTF-8 or contains NUL", role)
	}
	return nil
}

// isIdent reports whether s is a Cedar identifier: [A-Za-z_][A-Za-z0-9_]*.
// (Cedar's reserved words are not identifiers either; none is an entity
// type of the schema, so check's schema lookup refuses them.)
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return clipBytes(s, 64) + "..."
	}
	return s
}
