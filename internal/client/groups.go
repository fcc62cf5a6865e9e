package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Group is a named set of users, machines and other groups.
type Group struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Members     []Member  `json:"members"` // direct members, by kind then name
	CreatedAt   time.Time `json:"created_at"`
}

// Member is a direct member of a group.
type Member struct {
	Kind string `json:"kind"` // "user", "group" or "machine"
	Name string `json:"name"`
}

func (m Member) String() string { return m.Kind + ":" + m.Name }

// CreateGroup creates an empty group.
func (c *Client) CreateGroup(ctx context.Context, name, description string) (Group, error) {
	var res Group
	err := c.do(ctx, http.MethodPost, "/v1/groups", nil, struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
	}{name, description}, &res)
	return res, err
}

// Groups lists all groups, by name.
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	var res struct {
		Groups []Group `json:"groups"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/groups", nil, nil, &res)
	return res.Groups, err
}

// Group describes one group with its members.
func (c *Client) Group(ctx context.Context, name string) (Group, error) {
	var res Group
	err := c.do(ctx, http.MethodGet, "/v1/groups/"+url.PathEscape(name), nil, nil, &res)
	return res, err
}

// AddGroupMember adds m to the group and returns the group.
func (c *Client) AddGroupMember(ctx context.Context, group string, m Member) (Group, error) {
	var res Group
	err := c.do(ctx, http.MethodPost, "/v1/groups/"+url.PathEscape(group)+"/members", nil, m, &res)
	return res, err
}

// RemoveGroupMember removes m from the group and returns the group.
func (c *Client) RemoveGroupMember(ctx context.Context, group string, m Member) (Group, error) {
	var res Group
	path := "/v1/groups/" + url.PathEscape(group) + "/members/" + url.PathEscape(m.Kind) + "/" + url.PathEscape(m.Name)
	err := c.do(ctx, http.MethodDelete, path, nil, nil, &res)
	return res, err
}
