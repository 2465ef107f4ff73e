/** The upstream topic templates of `upstream.topic` and `upstream.eventsTopic`. */
export interface TopicTemplates {
  gateway: string
  /** e.g. `sluice/{gateway}/{topic}`; `{topic}` is the sensor's topic */
  topic: string
  /** e.g. `sluice/{gateway}/$sluice/{kind}`; kind is gap | epoch | batch | health */
  eventsTopic: string
}

export type EventKind = 'gap' | 'epoch' | 'batch' | 'health'

export function readingTopic (t: TopicTemplates, sensorTopic: string): string {
  return t.topic.replaceAll('{gateway}', t.gateway).replaceAll('{topic}', sensorTopic)
}

export function eventTopic (t: TopicTemplates, kind: EventKind): string {
  return t.eventsTopic.replaceAll('{gateway}', t.gateway).replaceAll('{kind}', kind)
}
