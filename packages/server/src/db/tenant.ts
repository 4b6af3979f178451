import {
  AliasNode,
  AndNode,
  BinaryOperationNode,
  ColumnNode,
  type DeleteQueryNode,
  IdentifierNode,
  type InsertQueryNode,
  JoinNode,
  type KyselyPlugin,
  type MergeQueryNode,
  OnNode,
  type OperationNode,
  OperationNodeTransformer,
  OperatorNode,
  ParensNode,
  type PluginTransformQueryArgs,
  type PluginTransformResultArgs,
  PrimitiveValueListNode,
  type QueryResult,
  RawNode,
  ReferenceNode,
  type RootOperationNode,
  type SelectQueryNode,
  TableNode,
  type UnknownRow,
  type UpdateQueryNode,
  ValueListNode,
  ValueNode,
  ValuesNode,
  WhereNode,
} from 'kysely';

/**
 * Tenant isolation in the application layer. Every org-owned table has an `org_id` column, and is listed in a
 * {@link TenantTables} set. Queries reach those tables only through `database.withTenant(orgId, …)` (see
 * database.ts), whose query builder carries a {@link TenantScopePlugin}: it adds `org_id = <orgId>` to every
 * read, update and delete of an org-owned table — in joins and subqueries too — and refuses an insert whose
 * `org_id` is another organization's. The plain query builders carry an {@link UnscopedAccessGuard} instead,
 * which refuses any query that touches an org-owned table at all, so forgetting the scope is an error the first
 * time the code runs, not a leak.
 *
 * On PostgreSQL the same helper also sets `app.org_id` for the transaction, and row-level security policies on
 * every org-owned table (see migrations/tenant-isolation.ts) return nothing without it: the database enforces
 * isolation even for SQL written by hand.
 */

/** The names of the org-owned tables: each has an `org_id` column naming the organization it belongs to. */
export type TenantTables = ReadonlySet<string>;

/** The column that names a row's organization, in every org-owned table. */
export const TENANT_COLUMN = 'org_id';

/** Raised when code reaches an org-owned table without a tenant scope: a programming error, never user input. */
export class UnscopedTenantAccessError extends Error {
  override name = 'UnscopedTenantAccessError';
}

/** The table a `FROM`/`JOIN`/`UPDATE` item names, and how the query refers to it (its alias, if any). */
function tableOf(item: OperationNode): { name: string; reference: TableNode } | undefined {
  if (TableNode.is(item)) return { name: item.table.identifier.name, reference: item };
  if (AliasNode.is(item) && TableNode.is(item.node) && IdentifierNode.is(item.alias)) {
    return { name: item.node.table.identifier.name, reference: TableNode.create(item.alias.name) };
  }
  return undefined;
}

function isRootQuery(node: RootOperationNode): boolean {
  return (
    node.kind === 'SelectQueryNode' ||
    node.kind === 'InsertQueryNode' ||
    node.kind === 'UpdateQueryNode' ||
    node.kind === 'DeleteQueryNode' ||
    node.kind === 'MergeQueryNode'
  );
}

/** Every table name a query node mentions, however deeply (subqueries, CTEs, joins). */
function* tablesIn(node: unknown): Generator<string> {
  if (typeof node !== 'object' || node === null) return;
  if (TableNode.is(node as OperationNode)) {
    yield (node as TableNode).table.identifier.name;
    return;
  }
  for (const value of Object.values(node)) {
    if (Array.isArray(value)) for (const item of value) yield* tablesIn(item);
    else if (typeof value === 'object') yield* tablesIn(value);
  }
}

/** Installed on the unscoped query builders: refuses every data query that names an org-owned table. */
export class UnscopedAccessGuard implements KyselyPlugin {
  readonly #tables: TenantTables;

  constructor(tables: TenantTables) {
    this.#tables = tables;
  }

  transformQuery({ node }: PluginTransformQueryArgs): RootOperationNode {
    // Schema changes (migrations) name tables too; only queries over rows are tenant data access.
    if (!isRootQuery(node)) return node;
    for (const table of tablesIn(node)) {
      if (this.#tables.has(table)) {
        throw new UnscopedTenantAccessError(
          `"${table}" belongs to organizations: query it through database.withTenant(orgId, …)`,
        );
      }
    }
    return node;
  }

  async transformResult({ result }: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return result;
  }
}

/** Installed by `withTenant`: confines every query to one organization's rows. */
export class TenantScopePlugin implements KyselyPlugin {
  readonly #transformer: TenantScopeTransformer;

  constructor(tables: TenantTables, orgId: string) {
    this.#transformer = new TenantScopeTransformer(tables, orgId);
  }

  transformQuery({ node }: PluginTransformQueryArgs): RootOperationNode {
    return this.#transformer.transformNode(node);
  }

  async transformResult({ result }: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return result;
  }
}

class TenantScopeTransformer extends OperationNodeTransformer {
  readonly #tables: TenantTables;
  readonly #orgId: string;

  constructor(tables: TenantTables, orgId: string) {
    super();
    this.#tables = tables;
    this.#orgId = orgId;
  }

  /**
   * `<table>.org_id = <orgId>` for each org-owned table among `items`, ANDed; undefined if there is none. A table
   * named in raw SQL cannot be seen, so it cannot be scoped: such an item is refused.
   */
  #conditionFor(items: readonly OperationNode[]): OperationNode | undefined {
    let condition: OperationNode | undefined;
    for (const item of items) {
      if (RawNode.is(item) || (AliasNode.is(item) && RawNode.is(item.node))) {
        throw new UnscopedTenantAccessError(
          'a table given as raw SQL cannot be confined to one organization',
        );
      }
      const table = tableOf(item);
      if (!table || !this.#tables.has(table.name)) continue;
      const equals = BinaryOperationNode.create(
        ReferenceNode.create(ColumnNode.create(TENANT_COLUMN), table.reference),
        OperatorNode.create('='),
        ValueNode.create(this.#orgId),
      );
      condition = condition ? AndNode.create(condition, equals) : equals;
    }
    return condition;
  }

  #scopeWhere<T extends { where?: WhereNode }>(node: T, items: readonly OperationNode[]): T {
    const condition = this.#conditionFor(items);
    if (!condition) return node;
    // In parentheses: a condition written as raw SQL (`a or b`) would otherwise bind the scope to `b` alone.
    const where = node.where ? AndNode.create(ParensNode.create(node.where.where), condition) : condition;
    return { ...node, where: WhereNode.create(where) };
  }

  /** A join's own condition gets the scope, so an outer join stays an outer join. */
  #scopeJoins(joins: readonly JoinNode[] | undefined): readonly JoinNode[] | undefined {
    return joins?.map((join) => {
      const condition = this.#conditionFor([join.table]);
      if (!condition) return join;
      return join.on
        ? { ...join, on: OnNode.create(AndNode.create(ParensNode.create(join.on.on), condition)) }
        : JoinNode.cloneWithOn(join, condition);
    });
  }

  protected override transformSelectQuery(node: SelectQueryNode): SelectQueryNode {
    const transformed = super.transformSelectQuery(node);
    const joins = this.#scopeJoins(transformed.joins);
    return this.#scopeWhere({ ...transformed, ...(joins ? { joins } : {}) }, transformed.from?.froms ?? []);
  }

  /** An update may not move a row to another organization: SQLite has no policy that would refuse it. */
  protected override transformUpdateQuery(node: UpdateQueryNode): UpdateQueryNode {
    const transformed = super.transformUpdateQuery(node);
    const target = transformed.table ? tableOf(transformed.table) : undefined;
    if (target && this.#tables.has(target.name)) {
      for (const update of transformed.updates ?? []) {
        const column = ColumnNode.is(update.column) ? update.column.column.name : undefined;
        const keepsOrg = ValueNode.is(update.value) && update.value.value === this.#orgId;
        if (column === TENANT_COLUMN && !keepsOrg) {
          throw new UnscopedTenantAccessError(`an update of "${target.name}" cannot change ${TENANT_COLUMN}`);
        }
      }
    }
    const joins = this.#scopeJoins(transformed.joins);
    const items = [...(transformed.table ? [transformed.table] : []), ...(transformed.from?.froms ?? [])];
    return this.#scopeWhere({ ...transformed, ...(joins ? { joins } : {}) }, items);
  }

  protected override transformDeleteQuery(node: DeleteQueryNode): DeleteQueryNode {
    const transformed = super.transformDeleteQuery(node);
    const joins = this.#scopeJoins(transformed.joins);
    const items = [...transformed.from.froms, ...(transformed.using?.tables ?? [])];
    return this.#scopeWhere({ ...transformed, ...(joins ? { joins } : {}) }, items);
  }

  /** A merge reads and writes by rules this plugin does not rewrite; Plinth's own code needs none. */
  protected override transformMergeQuery(node: MergeQueryNode): MergeQueryNode {
    for (const table of tablesIn(node)) {
      if (this.#tables.has(table)) {
        throw new UnscopedTenantAccessError(
          `a merge involving "${table}" cannot be confined to one organization`,
        );
      }
    }
    return super.transformMergeQuery(node);
  }

  /**
   * An insert into an org-owned table must name this organization in every row. Inserting from a select, or
   * updating on conflict (which could update another organization's row), is refused: neither can be checked
   * here, and Plinth's own code needs neither.
   */
  protected override transformInsertQuery(node: InsertQueryNode): InsertQueryNode {
    const transformed = super.transformInsertQuery(node);
    const table = transformed.into?.table.identifier.name;
    if (table === undefined || !this.#tables.has(table)) return transformed;
    if (transformed.onConflict?.updates) {
      throw new UnscopedTenantAccessError(`an upsert into "${table}" cannot be confined to one organization`);
    }
    const column = transformed.columns?.findIndex((c) => c.column.name === TENANT_COLUMN) ?? -1;
    const rows =
      transformed.values && ValuesNode.is(transformed.values) ? transformed.values.values : undefined;
    if (column < 0 || !rows) {
      throw new UnscopedTenantAccessError(
        `an insert into "${table}" must give ${TENANT_COLUMN} for every row`,
      );
    }
    for (const row of rows) {
      const value = PrimitiveValueListNode.is(row)
        ? row.values[column]
        : ValueListNode.is(row) && row.values[column] && ValueNode.is(row.values[column])
          ? (row.values[column] as ValueNode).value
          : undefined;
      if (value !== this.#orgId) {
        throw new UnscopedTenantAccessError(`an insert into "${table}" names another organization`);
      }
    }
    return transformed;
  }
}
