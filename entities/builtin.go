package entities

import (
	"encoding/json"
	"reflect"
	"time"

	"github.com/google/uuid"
)

// The built-in entity types model a runner fleet, the domain GARM exposes,
// one type per entity in GARM's list (garm.go holds the later additions).
// JSON names are the column names. Fields tagged `changecast:"secret"` never
// leave changecast. Fields tagged `changecast:"public"` hold no secret
// although their names look secret (a foreign key to credentials, a bool
// saying a token was fetched): they are explicitly allowed past sanitize's
// deny-by-default name rule. gorm tags describe the columns for store's migrations;
// defaults are set so rows can be written with plain SQL.
//
// Column types deliberately cover what the watcher decodes: uuid, text,
// integers, bool, numeric (exact digits, json.Number here), timestamptz,
// jsonb (kept verbatim, json.RawMessage here), bytea and text[].

// Repository is a GitHub repository that runners serve.
type Repository struct {
	ID               uuid.UUID  `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Owner            string     `json:"owner" gorm:"not null;default:''"`
	Name             string     `json:"name" gorm:"not null;default:''"`
	CredentialsID    *uuid.UUID `json:"credentials_id" gorm:"type:uuid" changecast:"public"`
	PoolBalancerType string     `json:"pool_balancer_type" gorm:"not null;default:'roundrobin'"`
	WebhookSecret    string     `json:"webhook_secret" gorm:"not null;default:''" changecast:"secret"`
	CreatedAt        time.Time  `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt        time.Time  `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// Organization is a GitHub organization that runners serve.
type Organization struct {
	ID               uuid.UUID  `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Name             string     `json:"name" gorm:"not null;default:''"`
	CredentialsID    *uuid.UUID `json:"credentials_id" gorm:"type:uuid" changecast:"public"`
	PoolBalancerType string     `json:"pool_balancer_type" gorm:"not null;default:'roundrobin'"`
	WebhookSecret    string     `json:"webhook_secret" gorm:"not null;default:''" changecast:"secret"`
	CreatedAt        time.Time  `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt        time.Time  `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// Enterprise is a GitHub enterprise that runners serve.
type Enterprise struct {
	ID            uuid.UUID  `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Name          string     `json:"name" gorm:"not null;default:''"`
	CredentialsID *uuid.UUID `json:"credentials_id" gorm:"type:uuid" changecast:"public"`
	WebhookSecret string     `json:"webhook_secret" gorm:"not null;default:''" changecast:"secret"`
	CreatedAt     time.Time  `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt     time.Time  `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// Pool is a set of runners with one image and flavor on one provider.
type Pool struct {
	ID                     uuid.UUID       `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	ProviderName           string          `json:"provider_name" gorm:"not null;default:''"`
	RunnerPrefix           string          `json:"runner_prefix" gorm:"not null;default:'garm'"`
	MaxRunners             int64           `json:"max_runners" gorm:"not null;default:0"`
	MinIdleRunners         int64           `json:"min_idle_runners" gorm:"not null;default:0"`
	Image                  string          `json:"image" gorm:"not null;default:''"`
	Flavor                 string          `json:"flavor" gorm:"not null;default:''"`
	OSType                 string          `json:"os_type" gorm:"column:os_type;not null;default:'linux'"`
	OSArch                 string          `json:"os_arch" gorm:"column:os_arch;not null;default:'amd64'"`
	Tags                   []string        `json:"tags" gorm:"type:text[];not null;default:'{}'"`
	Enabled                bool            `json:"enabled" gorm:"not null;default:true"`
	RunnerBootstrapTimeout int64           `json:"runner_bootstrap_timeout" gorm:"not null;default:20"`
	Priority               int32           `json:"priority" gorm:"type:integer;not null;default:0"`
	CostPerHour            json.Number     `json:"cost_per_hour" gorm:"type:numeric(12,4);not null;default:0"`
	ExtraSpecs             json.RawMessage `json:"extra_specs" gorm:"type:jsonb;not null;default:'{}'"`
	RepoID                 *uuid.UUID      `json:"repo_id" gorm:"type:uuid"`
	OrgID                  *uuid.UUID      `json:"org_id" gorm:"type:uuid"`
	EnterpriseID           *uuid.UUID      `json:"enterprise_id" gorm:"type:uuid"`
	CreatedAt              time.Time       `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt              time.Time       `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// User is a person or automation that can log in to changecast. Only admins
// receive user changes.
type User struct {
	ID         uuid.UUID `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Username   string    `json:"username" gorm:"not null;uniqueIndex"`
	Email      string    `json:"email" gorm:"not null;default:''"`
	FullName   string    `json:"full_name" gorm:"not null;default:''"`
	Password   string    `json:"password" gorm:"not null;default:''" changecast:"secret"`
	Generation int64     `json:"generation" gorm:"not null;default:0" changecast:"secret"`
	IsAdmin    bool      `json:"is_admin" gorm:"not null;default:false"`
	Enabled    bool      `json:"enabled" gorm:"not null;default:true"`
	CreatedAt  time.Time `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt  time.Time `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// Instance is one runner machine.
type Instance struct {
	ID                uuid.UUID       `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Name              string          `json:"name" gorm:"not null;default:''"`
	AgentID           int64           `json:"agent_id" gorm:"not null;default:0"`
	ProviderID        string          `json:"provider_id" gorm:"not null;default:''"`
	OSType            string          `json:"os_type" gorm:"column:os_type;not null;default:'linux'"`
	OSArch            string          `json:"os_arch" gorm:"column:os_arch;not null;default:'amd64'"`
	Addresses         json.RawMessage `json:"addresses" gorm:"type:jsonb;not null;default:'[]'"`
	Status            string          `json:"status" gorm:"not null;default:'pending_create'"`
	RunnerStatus      string          `json:"runner_status" gorm:"not null;default:'pending'"`
	PoolID            *uuid.UUID      `json:"pool_id" gorm:"type:uuid"`
	CallbackURL       string          `json:"callback_url" gorm:"column:callback_url;not null;default:''"`
	CreateAttempt     int64           `json:"create_attempt" gorm:"not null;default:0"`
	TokenFetched      bool            `json:"token_fetched" gorm:"not null;default:false" changecast:"public"`
	JitConfiguration  string          `json:"jit_configuration" gorm:"not null;default:''" changecast:"secret"`
	CallbackToken     string          `json:"callback_token" gorm:"not null;default:''" changecast:"secret"`
	GitHubRunnerGroup string          `json:"github_runner_group" gorm:"column:github_runner_group;not null;default:''"`
	Heartbeat         *time.Time      `json:"heartbeat" gorm:"type:timestamptz"`
	CreatedAt         time.Time       `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt         time.Time       `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// Job is a GitHub workflow job as seen through webhooks. Its key is GitHub's
// numeric job id.
type Job struct {
	ID              int64       `json:"id" gorm:"primaryKey;autoIncrement:false"`
	RunID           int64       `json:"run_id" gorm:"not null;default:0"`
	Action          string      `json:"action" gorm:"not null;default:''"`
	Status          string      `json:"status" gorm:"not null;default:'queued'"`
	Conclusion      string      `json:"conclusion" gorm:"not null;default:''"`
	Name            string      `json:"name" gorm:"not null;default:''"`
	RunnerName      string      `json:"runner_name" gorm:"not null;default:''"`
	RepositoryOwner string      `json:"repository_owner" gorm:"not null;default:''"`
	RepositoryName  string      `json:"repository_name" gorm:"not null;default:''"`
	Labels          []string    `json:"labels" gorm:"type:text[];not null;default:'{}'"`
	DurationSeconds json.Number `json:"duration_seconds" gorm:"type:numeric(12,3)"`
	LockedBy        *uuid.UUID  `json:"locked_by" gorm:"type:uuid"`
	StartedAt       *time.Time  `json:"started_at" gorm:"type:timestamptz"`
	CompletedAt     *time.Time  `json:"completed_at" gorm:"type:timestamptz"`
	CreatedAt       time.Time   `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt       time.Time   `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// Controller is a GARM controller's identity and public URLs.
type Controller struct {
	ID                   uuid.UUID `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Hostname             string    `json:"hostname" gorm:"not null;default:''"`
	CallbackURL          string    `json:"callback_url" gorm:"column:callback_url;not null;default:''"`
	MetadataURL          string    `json:"metadata_url" gorm:"column:metadata_url;not null;default:''"`
	WebhookURL           string    `json:"webhook_url" gorm:"column:webhook_url;not null;default:''"`
	MinimumJobAgeBackoff int64     `json:"minimum_job_age_backoff" gorm:"not null;default:30"`
	CreatedAt            time.Time `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt            time.Time `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// GitHubCredentials holds what GARM uses to talk to GitHub: a PAT or an app's
// private key, in Payload (secret).
type GitHubCredentials struct {
	ID           uuid.UUID       `json:"id" gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Name         string          `json:"name" gorm:"not null;default:''"`
	Description  string          `json:"description" gorm:"not null;default:''"`
	AuthType     string          `json:"auth_type" gorm:"not null;default:'pat'"`
	EndpointName string          `json:"endpoint_name" gorm:"not null;default:'github.com'"`
	Payload      json.RawMessage `json:"payload" gorm:"type:jsonb;not null;default:'{}'" changecast:"secret"`
	CreatedAt    time.Time       `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt    time.Time       `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// GitHubEndpoint is a GitHub or GHES instance. Its key is its name.
type GitHubEndpoint struct {
	Name          string    `json:"name" gorm:"primaryKey"`
	Description   string    `json:"description" gorm:"not null;default:''"`
	APIBaseURL    string    `json:"api_base_url" gorm:"column:api_base_url;not null;default:''"`
	UploadBaseURL string    `json:"upload_base_url" gorm:"column:upload_base_url;not null;default:''"`
	BaseURL       string    `json:"base_url" gorm:"column:base_url;not null;default:''"`
	CACertBundle  []byte    `json:"ca_cert_bundle" gorm:"column:ca_cert_bundle;type:bytea"`
	CreatedAt     time.Time `json:"created_at" gorm:"type:timestamptz;not null;default:now()"`
	UpdatedAt     time.Time `json:"updated_at" gorm:"type:timestamptz;not null;default:now()"`
}

// TableName methods pin the plural snake_case table names instead of
// relying on gorm's inflection: the publication and existing databases
// name these tables, so a change in gorm must not rename them.
func (Repository) TableName() string        { return "repositories" }
func (Organization) TableName() string      { return "organizations" }
func (Enterprise) TableName() string        { return "enterprises" }
func (Pool) TableName() string              { return "pools" }
func (User) TableName() string              { return "users" }
func (Instance) TableName() string          { return "instances" }
func (Job) TableName() string               { return "jobs" }
func (Controller) TableName() string        { return "controllers" }
func (GitHubCredentials) TableName() string { return "github_credentials" }
func (GitHubEndpoint) TableName() string    { return "github_endpoints" }

// Builtins returns the built-in entity types. Models returns one zero value
// of each, in the same order, for migrations.
func Builtins() []EntityType {
	out := make([]EntityType, 0, len(builtinModels))
	for _, b := range builtinModels {
		out = append(out, EntityType{Name: b.name, Table: b.model.(tabler).TableName(), Key: b.key, GoType: reflect.TypeOf(b.model)})
	}
	return out
}

// Models returns a zero value of each built-in entity struct, for gorm's
// AutoMigrate.
func Models() []any {
	out := make([]any, 0, len(builtinModels))
	for _, b := range builtinModels {
		out = append(out, reflect.New(reflect.TypeOf(b.model)).Interface())
	}
	return out
}

type tabler interface{ TableName() string }

var builtinModels = []struct {
	name  string
	key   string
	model any
}{
	{"repository", "id", Repository{}},
	{"organization", "id", Organization{}},
	{"enterprise", "id", Enterprise{}},
	{"pool", "id", Pool{}},
	{"scaleset", "id", ScaleSet{}},
	{"user", "id", User{}},
	{"instance", "id", Instance{}},
	{"job", "id", Job{}},
	{"controller", "id", Controller{}},
	{"github_credentials", "id", GitHubCredentials{}},
	{"gitea_credentials", "id", GiteaCredentials{}},
	{"github_endpoint", "name", GitHubEndpoint{}},
	{"template", "id", Template{}},
	{"file_object", "id", FileObject{}},
	{"forge_instance", "id", ForgeInstance{}},
	{"proxy", "id", Proxy{}},
}
