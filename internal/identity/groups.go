package identity

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/warderhq/warder/internal/audit"
	"github.com/warderhq/warder/internal/errkind"
	"github.com/warderhq/warder/internal/store"
)

// Group is a named set of members. Groups nest: a member may be a group,
// and membership is transitive (the authz package walks Parents).
type Group struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Members     []Member  `json:"members"` // sorted by kind, then name
	CreatedAt   time.Time `json:"created_at"`
}

// Member is a direct member of a group.
type Member struct {
	Kind string `json:"kind"` // "user", "machine" or "group"
	Name string `json:"name"`
}

// checkMember refuses a member of unknown kind or invalid name.
func checkMember(m Member) error {
	if m.Kind != "user" && m.Kind != "machine" && m.Kind != "group" {
		return errkind.New(errkind.Invalid, "identity: member kind must be user, machine or group")
	}
	return checkName(m.Kind, m.Name)
}

// CreateGroup creates an empty group; an existing one of that name is Conflict.
func (d *Directory) CreateGroup(ctx context.Context, o audit.Origin, name, description string) (Group, error) {
	var g Group
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		g, err = d.CreateGroupTx(ctx, tx, o, name, description)
		return err
	})
	return g, err
}

// CreateGroupTx is CreateGroup inside the caller's transaction; it uses only tx.
func (d *Directory) CreateGroupTx(ctx context.Context, tx *sql.Tx, o audit.Origin, name, description string) (Group, error) {
	if err := checkName("group", name); err != nil {
		return Group{}, err
	}
	if err := checkText("group description", description, 1024); err != nil {
		return Group{}, err
	}
	now, nowUS := d.nowMicros()
	_, err := tx.ExecContext(ctx, `INSERT INTO identity_groups (name, description, created_at) VALUES ($1, $2, $3)`, name, description, nowUS)
	if store.IsUniqueViolation(err) {
		return Group{}, errkind.New(errkind.Conflict, "identity: group %q already exists", name)
	}
	if err != nil {
		return Group{}, fmt.Errorf("identity: create group: %w", err)
	}
	g := Group{Name: name, Description: description, Members: []Member{}, CreatedAt: now}
	return g, d.appendTx(ctx, tx, o.Event("identity.group.create", "group:"+name, audit.OutcomeSuccess, nil))
}

// Group returns the named group with its direct members, or NotFound.
func (d *Directory) Group(ctx context.Context, name string) (Group, error) {
	gs, err := d.groups(ctx, name)
	if err != nil {
		return Group{}, err
	}
	if len(gs) == 0 {
		return Group{}, errkind.New(errkind.NotFound, "identity: no group %q", name)
	}
	return gs[0], nil
}

// Groups returns every group with its direct members, by name.
func (d *Directory) Groups(ctx context.Context) ([]Group, error) { return d.groups(ctx, "") }

// groups reads the group named only, or all when only is "".
func (d *Directory) groups(ctx context.Context, only string) ([]Group, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT name, description, created_at FROM identity_groups
		WHERE $1 = '' OR name = $1 ORDER BY name`, only)
	if err != nil {
		return nil, fmt.Errorf("identity: list groups: %w", err)
	}
	out := []Group{}
	idx := map[string]int{}
	for rows.Next() {
		var g Group
		var created int64
		if err := rows.Scan(&g.Name, &g.Description, &created); err != nil {
			rows.Close()
			return nil, fmt.Errorf("identity: list groups: %w", err)
		}
		g.CreatedAt, g.Members = store.FromMicros(created), []Member{}
		idx[g.Name] = len(out)
		out = append(out, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: list groups: %w", err)
	}
	rows, err = d.db.QueryContext(ctx, `SELECT group_name, member_kind, member_name FROM identity_group_members
		WHERE $1 = '' OR group_name = $1 ORDER BY group_name, member_kind, member_name`, only)
	if err != nil {
		return nil, fmt.Errorf("identity: list group members: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g string
		var m Member
		if err := rows.Scan(&g, &m.Kind, &m.Name); err != nil {
			return nil, fmt.Errorf("identity: list group members: %w", err)
		}
		if i, ok := idx[g]; ok {
			out[i].Members = append(out[i].Members, m)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: list group members: %w", err)
	}
	return out, nil
}

// AddMember adds m to group. The group and m must exist (NotFound); m
// already a member is Conflict; a group that would (transitively) contain
// itself is Invalid.
func (d *Directory) AddMember(ctx context.Context, o audit.Origin, group string, m Member) error {
	err := d.db.InTx(ctx, func(tx *sql.Tx) error { return d.AddMemberTx(ctx, tx, o, group, m) })
	if err == nil {
		d.parents.invalidate()
	}
	return err
}

// AddMemberTx is AddMember inside the caller's transaction; it uses only
// tx. Other readers of Parents in this process see the change within a
// second of commit (AddMember: at once).
func (d *Directory) AddMemberTx(ctx context.Context, tx *sql.Tx, o audit.Origin, group string, m Member) error {
	if err := checkName("group", group); err != nil {
		return err
	}
	if err := checkMember(m); err != nil {
		return err
	}
	// Bumping the version first serialises membership changes on
	// PostgreSQL (row lock until commit), so two concurrent additions
	// cannot close a cycle that neither sees.
	if err := bumpGroupsVersion(ctx, tx); err != nil {
		return err
	}
	for _, want := range []Member{{"group", group}, m} {
		if err := memberExistsTx(ctx, tx, want); err != nil {
			return err
		}
	}
	if m.Kind == "group" {
		if err := checkNoCycle(ctx, tx, group, m.Name); err != nil {
			return err
		}
	}
	_, nowUS := d.nowMicros()
	_, err := tx.ExecContext(ctx, `INSERT INTO identity_group_members (group_name, member_kind, member_name, created_at)
		VALUES ($1, $2, $3, $4)`, group, m.Kind, m.Name, nowUS)
	if store.IsUniqueViolation(err) {
		return errkind.New(errkind.Conflict, "identity: %s %q is already a member of group %q", m.Kind, m.Name, group)
	}
	if err != nil {
		return fmt.Errorf("identity: add member: %w", err)
	}
	d.parents.invalidate()
	return d.appendTx(ctx, tx, o.Event("identity.group.member.add", "group:"+group, audit.OutcomeSuccess,
		map[string]string{"member": m.Kind + ":" + m.Name}))
}

// RemoveMember removes m from group; m not a member is NotFound.
func (d *Directory) RemoveMember(ctx context.Context, o audit.Origin, group string, m Member) error {
	if err := checkMember(m); err != nil {
		return err
	}
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := bumpGroupsVersion(ctx, tx); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM identity_group_members
			WHERE group_name = $1 AND member_kind = $2 AND member_name = $3`, group, m.Kind, m.Name)
		if err != nil {
			return fmt.Errorf("identity: remove member: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "identity: %s %q is not a member of group %q", m.Kind, m.Name, group)
		}
		return d.appendTx(ctx, tx, o.Event("identity.group.member.remove", "group:"+group, audit.OutcomeSuccess,
			map[string]string{"member": m.Kind + ":" + m.Name}))
	})
	if err == nil {
		d.parents.invalidate()
	}
	return err
}

// DeleteGroup deletes a group, its memberships and its membership of
// other groups.
func (d *Directory) DeleteGroup(ctx context.Context, o audit.Origin, name string) error {
	err := d.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM identity_groups WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("identity: delete group: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errkind.New(errkind.NotFound, "identity: no group %q", name)
		}
		if err := d.dropMembershipsTx(ctx, tx, "group", name); err != nil {
			return err
		}
		return d.appendTx(ctx, tx, o.Event("identity.group.delete", "group:"+name, audit.OutcomeSuccess, nil))
	})
	if err == nil {
		d.parents.invalidate()
	}
	return err
}

// dropMembershipsTx removes a deleted principal or group from every group
// (a group's own members go with it by ON DELETE CASCADE).
func (d *Directory) dropMembershipsTx(ctx context.Context, tx *sql.Tx, kind, name string) error {
	if err := bumpGroupsVersion(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM identity_group_members WHERE member_kind = $1 AND member_name = $2`, kind, name); err != nil {
		return fmt.Errorf("identity: drop memberships of %s %q: %w", kind, name, err)
	}
	return nil
}

// memberExistsTx returns NotFound unless m exists.
func memberExistsTx(ctx context.Context, tx *sql.Tx, m Member) error {
	table := map[string]string{"user": "identity_users", "machine": "identity_machines", "group": "identity_groups"}[m.Kind]
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE name = $1`, m.Name).Scan(&n); err != nil {
		return fmt.Errorf("identity: look up %s: %w", m.Kind, err)
	}
	if n == 0 {
		return errkind.New(errkind.NotFound, "identity: no %s %q", m.Kind, m.Name)
	}
	return nil
}

// checkNoCycle refuses adding group child to group parent when parent is
// child or is (transitively) contained in child.
func checkNoCycle(ctx context.Context, tx *sql.Tx, parent, child string) error {
	seen := map[string]bool{child: true}
	queue := []string{child}
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		if g == parent {
			return errkind.New(errkind.Invalid, "identity: adding group %q to group %q would make a cycle", child, parent)
		}
		rows, err := tx.QueryContext(ctx, `SELECT member_name FROM identity_group_members WHERE group_name = $1 AND member_kind = 'group'`, g)
		if err != nil {
			return fmt.Errorf("identity: walk groups: %w", err)
		}
		for rows.Next() {
			var sub string
			if err := rows.Scan(&sub); err != nil {
				rows.Close()
				return fmt.Errorf("identity: walk groups: %w", err)
			}
			if !seen[sub] {
				seen[sub] = true
				queue = append(queue, sub)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("identity: walk groups: %w", err)
		}
	}
	return nil
}

// bumpGroupsVersion increments the membership version in tx.
func bumpGroupsVersion(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE identity_meta SET value = value + 1 WHERE name = 'groups_version'`); err != nil {
		return fmt.Errorf("identity: bump groups version: %w", err)
	}
	return nil
}

// Parents returns the names of the groups kind ("user", "machine" or
// "group") name is a direct member of, sorted; none for an unknown member.
//
// It is served from an in-memory copy of all memberships. The copy is
// dropped at once by this Directory's AddMember, RemoveMember, DeleteGroup
// and principal deletion, and reloaded when the database's membership
// version counter (bumped by every change, from any process) has moved;
// the counter is read at most once per second. So a change made by another
// process on a shared PostgreSQL database, or through AddMemberTx, is seen
// within about a second.
func (d *Directory) Parents(ctx context.Context, kind, name string) ([]string, error) {
	if err := checkMember(Member{kind, name}); err != nil {
		return nil, err
	}
	m, err := d.parents.get(ctx)
	if err != nil {
		return nil, err
	}
	return slices.Clone(m[Member{kind, name}]), nil
}

// parentCache is the in-memory copy of memberships behind Parents.
type parentCache struct {
	db  *store.DB
	now func() time.Time

	loadMu sync.Mutex // serialises reloads, so a burst of misses reads the database once

	// mu protects the following.
	mu      sync.Mutex
	gen     uint64              // incremented by invalidate
	loaded  bool                // parents and version are valid
	version int64               // groups_version the copy was read at
	checked time.Time           // when version was last compared with the database
	parents map[Member][]string // member -> sorted direct parent groups
}

func newParentCache(db *store.DB, now func() time.Time) *parentCache {
	return &parentCache{db: db, now: now}
}

// invalidate drops the copy; the next get reloads it.
func (c *parentCache) invalidate() {
	c.mu.Lock()
	c.gen++
	c.loaded = false
	c.mu.Unlock()
}

// fresh returns the copy if it is loaded and was checked within a second.
func (c *parentCache) fresh() (map[Member][]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded && c.now().Sub(c.checked) < time.Second && !c.now().Before(c.checked) {
		return c.parents, true
	}
	return nil, false
}

// get returns the current membership map, which callers must not modify.
func (c *parentCache) get(ctx context.Context) (map[Member][]string, error) {
	if m, ok := c.fresh(); ok {
		return m, nil
	}
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	if m, ok := c.fresh(); ok {
		return m, nil
	}
	c.mu.Lock()
	gen, loaded, have := c.gen, c.loaded, c.version
	c.mu.Unlock()

	var v int64
	if err := c.db.QueryRowContext(ctx, `SELECT value FROM identity_meta WHERE name = 'groups_version'`).Scan(&v); err != nil {
		return nil, fmt.Errorf("identity: read groups version: %w", err)
	}
	if loaded && v == have {
		c.mu.Lock()
		if c.gen == gen {
			c.checked = c.now()
			m := c.parents
			c.mu.Unlock()
			return m, nil
		}
		c.mu.Unlock()
	}
	m, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen { // no local change since we started reading
		c.parents, c.version, c.loaded, c.checked = m, v, true, c.now()
	}
	return m, nil
}

// load reads all memberships.
func (c *parentCache) load(ctx context.Context) (map[Member][]string, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT member_kind, member_name, group_name FROM identity_group_members
		ORDER BY member_kind, member_name, group_name`)
	if err != nil {
		return nil, fmt.Errorf("identity: read memberships: %w", err)
	}
	defer rows.Close()
	m := map[Member][]string{}
	for rows.Next() {
		var k Member
		var g string
		if err := rows.Scan(&k.Kind, &k.Name, &g); err != nil {
			return nil, fmt.Errorf("identity: read memberships: %w", err)
		}
		m[k] = append(m[k], g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: read memberships: %w", err)
	}
	return m, nil
}
