/**
 * Templates over routing fields, e.g. an ordering key `{repository}` or a Kafka key `{organization}/{event}`.
 * Unknown fields are rejected when a subscriber is registered (model.ts `Template`); a field the event lacks renders
 * as an empty string.
 */
import type { RoutingFields } from '../envelope.ts';

export function renderTemplate(template: string, source: string, routing: RoutingFields): string {
  return template.replace(/\{([a-z]+)\}/g, (_m, field: string) => {
    if (field === 'source') return source;
    const value = routing[field as keyof RoutingFields];
    return value ?? '';
  });
}
